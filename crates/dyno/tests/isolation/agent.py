"""The attacker's agent (stdlib only), run in a real dyno of the app `attacker`.

`python3 agent.py web` serves on $PORT (reached through the router); `python3 agent.py worker`
serves on 127.0.0.1:7777 inside the worker's own network namespace (the test enters it as root).

POST /run with a Python snippet as the body runs it as a subprocess, as the dyno's user, in
its own session (so that a timeout ends everything it started), with the dyno's stdout as fd 3
(the snippet's way into the app's log). `X-Timeout: S` bounds it (default 20 s). The answer is
JSON: {"exit": N (negative: killed by signal -N), "stdout": ..., "stderr": ..., "timed_out": b}.
GET / answers "agent $DYNO".
"""
import json
import os
import signal
import socketserver
import subprocess
import sys

DYNO = os.environ.get("DYNO", "?")
WORKER_PORT = 7777
LIMIT = 4 << 20  # bytes of stdout/stderr kept per run

# fd 3 in every snippet: the dyno's stdout, i.e. its log.
os.dup2(1, 3)


def log(message):
    print(message, flush=True)


def run(code, timeout):
    proc = subprocess.Popen(
        [sys.executable, "-c", code],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        pass_fds=(3,),
        start_new_session=True,
    )
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except OSError:
            pass
        out, err = proc.communicate()
    return {
        "exit": proc.returncode,
        "stdout": out[:LIMIT].decode("utf-8", "replace"),
        "stderr": err[:LIMIT].decode("utf-8", "replace"),
        "timed_out": timed_out,
    }


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        head = self.rfile.readline(8192).decode("latin-1").split()
        headers = {}
        while True:
            line = self.rfile.readline(8192).decode("latin-1").strip()
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if len(head) < 2:
            return
        if head[0] == "POST" and head[1] == "/run":
            code = self.rfile.read(int(headers.get("content-length", "0"))).decode()
            try:
                result = run(code, float(headers.get("x-timeout", "20")))
            except Exception as e:  # the dyno cannot fork (fork bomb): say so
                result = {"exit": None, "stdout": "", "stderr": repr(e), "timed_out": False}
            self.answer(200, json.dumps(result).encode(), "application/json")
        else:
            self.answer(200, ("agent " + DYNO).encode(), "text/plain")

    def answer(self, status, body, kind):
        self.wfile.write(
            b"HTTP/1.1 %d OK\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            % (status, kind.encode(), len(body))
            + body
        )


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 64


if __name__ == "__main__":
    if sys.argv[1:] == ["web"]:
        address = ("0.0.0.0", int(os.environ["PORT"]))
    else:
        address = ("127.0.0.1", WORKER_PORT)
    log("agent %s listening on %s:%d" % (DYNO, *address))
    Server(address, Handler).serve_forever()
