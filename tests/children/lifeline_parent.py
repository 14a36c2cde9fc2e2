"""Stand-in for swapd: a lifeline plus one process group with a grandchild, then sleep.

Prints "lifeline <pid>", the group's "leader <pid>" and "grandchild <pid>" lines, then
"ready". The test kills this process with SIGKILL and expects the guardian to clean up.
"""

import os
import sys

import trio

from swapd.supervise.lifeline import open_lifeline
from swapd.supervise.procgroup import open_process_group

WRAPPER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "wrapper_with_grandchild.py")


async def main() -> None:
    seen = trio.Event()

    def on_output(stream: str, line: str) -> None:
        print(line, flush=True)
        if line.startswith("leader"):
            seen.set()

    async with open_lifeline(grace=0.5) as lifeline:
        print(f"lifeline {lifeline.pid}", flush=True)
        async with open_process_group(
            [sys.executable, WRAPPER], env=dict(os.environ), on_output=on_output, lifeline=lifeline
        ):
            await seen.wait()
            print("ready", flush=True)
            await trio.sleep_forever()


trio.run(main)
