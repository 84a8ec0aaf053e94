"""Runs a command on a new terminal of COLS x ROWS, as a person at a keyboard would: each step
is `expect:TEXT` (wait until TEXT has appeared since the last expect; 60 s, else fail) or
`send:TEXT` (type it; Python escapes like \\r and \\x03 work). Then waits for the command to
exit and prints one JSON object: {"code": exit status, "output": all it wrote, "times": seconds
from the start to each expect met}.

usage: pty_session.py COLS ROWS STEP... -- COMMAND ARG...
"""
import codecs
import fcntl
import json
import os
import pty
import select
import struct
import sys
import termios
import time

cols, rows = int(sys.argv[1]), int(sys.argv[2])
split = sys.argv.index("--")
steps, command = sys.argv[3:split], sys.argv[split + 1:]

started = time.time()
times = []
pid, master = pty.fork()
if pid == 0:
    fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    os.execvp(command[0], command)

output = b""
seen = 0


def read_some(timeout):
    global output
    ready, _, _ = select.select([master], [], [], timeout)
    if not ready:
        return False
    try:
        data = os.read(master, 65536)
    except OSError:
        return None
    if not data:
        return None
    output += data
    return True


def fail(why):
    print(json.dumps({"code": None, "error": why, "output": output.decode("utf-8", "replace")}))
    sys.exit(1)


for step in steps:
    kind, _, text = step.partition(":")
    text = codecs.decode(text, "unicode_escape").encode("utf-8")
    if kind == "send":
        os.write(master, text)
    elif kind == "expect":
        deadline = time.time() + 60
        while output.find(text, seen) < 0:
            if time.time() > deadline or read_some(deadline - time.time()) is None:
                fail("never saw %r" % text)
        seen = output.find(text, seen) + len(text)
        times.append(time.time() - started)
    else:
        fail("unknown step %r" % step)

deadline = time.time() + 60
status = None
while status is None:
    if time.time() > deadline:
        os.kill(pid, 9)
        fail("the command did not exit")
    if read_some(0.2) is None:
        time.sleep(0.05)
    done, waited = os.waitpid(pid, os.WNOHANG)
    if done:
        status = waited
while read_some(0.2):
    pass
print(json.dumps({
    "code": os.waitstatus_to_exitcode(status),
    "output": output.decode("utf-8", "replace"),
    "times": times,
}))
