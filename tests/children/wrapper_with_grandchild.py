"""A leader that starts a grandchild in its own process group, prints its pid, and waits.

The leader dies on SIGTERM (default action); the grandchild is sleeper.py, given any extra
arguments (e.g. --ignore-term, so it outlives the leader).
"""

import os
import subprocess
import sys

sleeper = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sleeper.py")
child = subprocess.Popen([sys.executable, sleeper, *sys.argv[1:]], stdout=subprocess.PIPE)
assert child.stdout is not None
ready = child.stdout.readline()  # the grandchild's handlers are installed once it says ready
print(f"grandchild {child.pid}", flush=True)
print(f"leader {os.getpid()}", flush=True)
child.wait()
