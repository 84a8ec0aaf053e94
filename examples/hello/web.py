"""A tiny web process: answers GET / on $PORT, logs one line per request.

Built on socketserver rather than http.server: importing http.server pulls in email, ssl and
http.client (about 40 ms of CPU per start), which is most of the cost of starting a hundred of
these dynos at once.
"""
import os
import signal
import socket
import socketserver
import sys

PORT = int(os.environ.get("PORT", "5000"))
DYNO = os.environ.get("DYNO", "local")
GREETING = os.environ.get("GREETING", "Hello")  # a config var, from .env
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


def log(msg):
    print(msg, flush=True)  # stdout lines are the app's log lines


class Handler(socketserver.StreamRequestHandler):
    def handle(self):
        # HTTP/1.1 keep-alive: requests follow each other on one connection until it closes.
        while self.serve_one():
            pass

    def serve_one(self):
        request_line = self.rfile.readline(8192).decode("latin-1").rstrip("\r\n")
        if not request_line:
            return False
        headers = {}
        while True:
            line = self.rfile.readline(8192).decode("latin-1").rstrip("\r\n")
            if not line:
                break
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        parts = request_line.split()
        if len(parts) != 3:
            self.reply(request_line, 400, "bad request\n", close=True)
            return False
        method, path, version = parts
        length = int(headers.get("content-length", "0") or "0")
        if length:
            self.rfile.read(length)
        close = version == "HTTP/1.0" or headers.get("connection", "").lower() == "close"
        if method not in ("GET", "HEAD"):
            self.reply(request_line, 405, "method not allowed\n", close)
        elif path != "/":
            self.reply(request_line, 404, "not found\n", close)
        else:
            body = f"{GREETING} from {DYNO}\nhostname: {socket.gethostname()}\n"
            self.reply(request_line, 200, body, close, head_only=method == "HEAD")
        return not close

    def reply(self, request_line, status, body, close, head_only=False):
        data = body.encode()
        head = (
            f"HTTP/1.1 {status} {REASONS[status]}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(data)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        self.wfile.write(head.encode() + (b"" if head_only else data))
        log(f'{self.client_address[0]} "{request_line}" {status} {len(data)}')


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def stop(signum, frame):
    log(f"{DYNO}: SIGTERM, shutting down")
    sys.exit(0)


signal.signal(signal.SIGTERM, stop)
server = Server(("0.0.0.0", PORT), Handler)
log(f"{DYNO}: listening on 0.0.0.0:{PORT}")
server.serve_forever()
