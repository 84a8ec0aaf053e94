"""A tiny web process: answers GET / on $PORT, logs one line per request."""
import os
import signal
import socket
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORT = int(os.environ.get("PORT", "5000"))
DYNO = os.environ.get("DYNO", "local")
GREETING = os.environ.get("GREETING", "Hello")  # a config var, from .env


def log(msg):
    print(msg, flush=True)  # stdout lines are the app's log lines


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/":
            self.reply(404, "not found\n")
            return
        self.reply(200, f"{GREETING} from {DYNO}\nhostname: {socket.gethostname()}\n")

    def reply(self, status, body):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, fmt, *args):  # default: stderr, with its own timestamp
        log(f"{self.client_address[0]} {fmt % args}")


def stop(signum, frame):
    log(f"{DYNO}: SIGTERM, shutting down")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
log(f"{DYNO}: listening on 0.0.0.0:{PORT}")
server.serve_forever()
