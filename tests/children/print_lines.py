"""Write a known mix of lines to stdout and stderr, then exit 0.

stdout: "out 1", "out 2" (CRLF), a 1 MiB line, "after big", invalid UTF-8, and a last line
without a newline. stderr: "err 1".
"""

import sys

out = sys.stdout.buffer
out.write(b"out 1\nout 2\r\n")
out.flush()
sys.stderr.buffer.write(b"err 1\n")
sys.stderr.buffer.flush()
out.write(b"x" * (1024 * 1024) + b"\n")
out.write(b"after big\n")
out.write(b"bad \xff utf8\n")
out.write(b"tail without newline")
out.flush()
