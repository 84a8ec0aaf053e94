"""A scripted web app for the router tests (stdlib only), run in a real dyno.

Listens on $PORT, prints one line per accepted connection ("accepted <ip>"), answers one
request per connection (always `Connection: close`), scripted by path:

  /echo            200, body: $DYNO, the request line, then the request headers as
                   `name: value` lines
  /hang            reads the request, never answers
  /reset           reads the request head, resets the connection (SO_LINGER 0, close)
  /close           reads the request head, closes without a response
  /crash           reads the request head, the process exits (the dyno crashes)
  /huge-headers    a response head of ~640 KiB
  /slow-body       the head (Content-Length: 100) and one body byte, then silence
  /stop-listening?dyno=web.1
                   that dyno closes its listening socket (and keeps running)
  /ws              WebSocket echo (RFC 6455, by hand)
  /download?bytes=N  N bytes of the pattern `offset % 251`
  /upload?pace_ms=M  reads the body (Content-Length or chunked; M ms per MiB, a slow reader),
                   checks the same pattern, answers "received N bytes pattern ok" (or where
                   it broke)
  anything else    200 "hello from $DYNO"
"""

import base64
import hashlib
import os
import socket
import struct
import sys
import threading
import time

DYNO = os.environ.get("DYNO", "?")
PORT = int(os.environ["PORT"])
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# One pattern period is 251 bytes; a buffer of whole periods keeps every chunk aligned.
PATTERN = bytes(i % 251 for i in range(251 * 4096))  # ~1 MiB
PATTERN2 = PATTERN + PATTERN  # for comparisons starting mid-period

listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("0.0.0.0", PORT))
listener.listen(256)
stopped = threading.Event()


def log(message):
    sys.stdout.write(message + "\n")
    sys.stdout.flush()


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def read_head(self):
        while b"\r\n\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers = []
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers.append((name.strip().lower(), value.strip()))
        return method, target, version, headers

    def read_some(self):
        if self.buf:
            data, self.buf = self.buf, b""
            return data
        return self.sock.recv(1 << 20)

    def read_exact(self, n):
        out = b""
        while len(out) < n:
            data = self.read_some()
            if not data:
                raise ConnectionError("eof")
            out += data
        if len(out) > n:
            self.buf = out[n:] + self.buf
            out = out[:n]
        return out

    def read_line(self):
        while b"\r\n" not in self.buf:
            data = self.sock.recv(65536)
            if not data:
                raise ConnectionError("eof")
            self.buf += data
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def body_chunks(self, headers):
        """The request body, chunk by chunk (Content-Length or chunked)."""
        h = dict(headers)
        if "chunked" in h.get("transfer-encoding", "").lower():
            while True:
                size = int(self.read_line().split(b";")[0], 16)
                if size == 0:
                    while self.read_line():
                        pass
                    return
                left = size
                while left:
                    data = self.read_some()
                    if not data:
                        raise ConnectionError("eof in chunk")
                    if len(data) > left:
                        self.buf = data[left:] + self.buf
                        data = data[:left]
                    left -= len(data)
                    yield data
                self.read_line()
        else:
            left = int(h.get("content-length", "0"))
            while left:
                data = self.read_some()
                if not data:
                    raise ConnectionError("eof in body")
                if len(data) > left:
                    self.buf = data[left:] + self.buf
                    data = data[:left]
                left -= len(data)
                yield data

    def respond(self, status, body, extra=""):
        if isinstance(body, str):
            body = body.encode()
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
        )
        self.sock.sendall(head.encode() + body)


def query(target, key):
    _, _, q = target.partition("?")
    for part in q.split("&"):
        k, _, v = part.partition("=")
        if k == key:
            return v
    return None


def websocket(conn, headers):
    key = dict(headers).get("sec-websocket-key", "").encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    conn.sock.sendall(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
        ).encode()
    )
    while True:
        b0, b1 = conn.read_exact(2)
        opcode = b0 & 0x0F
        length = b1 & 0x7F
        if length == 126:
            length = int.from_bytes(conn.read_exact(2), "big")
        elif length == 127:
            length = int.from_bytes(conn.read_exact(8), "big")
        mask = conn.read_exact(4) if b1 & 0x80 else b"\0\0\0\0"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(conn.read_exact(length)))
        if length < 126:
            frame = bytes([0x80 | opcode, length])
        else:
            frame = bytes([0x80 | opcode, 126]) + length.to_bytes(2, "big")
        conn.sock.sendall(frame + payload)
        if opcode == 0x8:
            return


def download(conn, n):
    conn.sock.sendall(
        f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
        f"Content-Length: {n}\r\nConnection: close\r\n\r\n".encode()
    )
    view = memoryview(PATTERN)
    while n:
        k = min(n, len(PATTERN))
        conn.sock.sendall(view[:k])
        n -= k


def upload(conn, headers, pace_ms):
    offset = 0
    broken = None
    paced = 0
    for data in conn.body_chunks(headers):
        # A slow reader, if asked: `pace_ms` per MiB.
        while pace_ms and paced + (1 << 20) <= offset + len(data):
            paced += 1 << 20
            time.sleep(pace_ms / 1000)
        if broken is None:
            pos = 0
            while pos < len(data):
                k = min(len(data) - pos, len(PATTERN))
                s = (offset + pos) % 251
                if data[pos : pos + k] != PATTERN2[s : s + k]:
                    broken = offset + pos
                    break
                pos += k
        offset += len(data)
    verdict = "pattern ok" if broken is None else f"pattern broken near {broken}"
    conn.respond("200 OK", f"received {offset} bytes {verdict}\n")


def handle(sock):
    conn = Conn(sock)
    try:
        request = conn.read_head()
        if request is None:
            return
        method, target, version, headers = request
        path = target.split("?", 1)[0]
        if path == "/echo":
            body = f"{DYNO}\n{method} {target} {version}\n"
            body += "".join(f"{k}: {v}\n" for k, v in headers)
            conn.respond("200 OK", body)
        elif path == "/hang":
            time.sleep(3600)
        elif path == "/reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        elif path == "/close":
            pass
        elif path == "/crash":
            log("crashing on request")
            os._exit(3)
        elif path == "/huge-headers":
            head = "HTTP/1.1 200 OK\r\n"
            head += "".join(f"x-big-{i}: {'b' * 8000}\r\n" for i in range(80))
            head += "Content-Length: 2\r\nConnection: close\r\n\r\nok"
            sock.sendall(head.encode())
        elif path == "/slow-body":
            sock.sendall(
                b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\nx"
            )
            time.sleep(3600)
        elif path == "/stop-listening":
            if query(target, "dyno") == DYNO:
                stopped.set()
                listener.shutdown(socket.SHUT_RDWR)
                listener.close()
                log("stopped listening")
                conn.respond("200 OK", f"stopped listening: {DYNO}\n")
            else:
                conn.respond("409 Conflict", f"not me: {DYNO}\n")
        elif path == "/ws":
            websocket(conn, headers)
        elif path == "/download":
            download(conn, int(query(target, "bytes") or "0"))
        elif path == "/upload":
            upload(conn, headers, int(query(target, "pace_ms") or "0"))
        else:
            conn.respond("200 OK", f"hello from {DYNO}\n")
    except (ConnectionError, OSError, ValueError):
        pass
    finally:
        try:
            sock.close()
        except OSError:
            pass


log(f"listening on {PORT}")
while True:
    try:
        client, address = listener.accept()
    except OSError:
        if stopped.is_set():
            while True:
                time.sleep(3600)
        raise
    log(f"accepted {address[0]}")
    threading.Thread(target=handle, args=(client,), daemon=True).start()
