"""Print "ready <pid>", then sleep until killed.

--ignore-term      ignore SIGTERM (a server that must be SIGKILLed)
--exit-on-term N   on SIGTERM print "got SIGTERM" and exit with code N
"""

import argparse
import os
import signal
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--ignore-term", action="store_true")
parser.add_argument("--exit-on-term", type=int)
args = parser.parse_args()

if args.ignore_term:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
elif args.exit_on_term is not None:

    def on_term(signum: int, frame: object) -> None:
        print("got SIGTERM", flush=True)
        sys.exit(args.exit_on_term)

    signal.signal(signal.SIGTERM, on_term)

print(f"ready {os.getpid()}", flush=True)
while True:
    time.sleep(60)
