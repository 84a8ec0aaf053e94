"""The victim (stdlib only), run in a real dyno of the app `victim`: something to see and to
reach for the attacker.

Every dyno (web and worker) listens on TCP 0.0.0.0:6001 and [::]:6003, UDP 0.0.0.0:6002 (also
joined to the multicast group 239.1.1.1) and [::]:6004, and on the abstract unix socket
@victim-secret; any contact there is logged as `victim-hit <what> from <peer>` (the test asserts
there is none). It holds a long-lived connection to the fake internet (198.51.100.10:7000) and
logs `victim-outbound connected` once it is up. The web dyno answers on $PORT:
  /outbound?port=N  connects to 198.51.100.10:N (3 s), answers "outbound ok" or why not
  anything else     "victim $DYNO"
Its secrets: the config var VICTIM_SECRET and the slug file secret.txt.
"""
import os
import socket
import socketserver
import struct
import threading
import time

DYNO = os.environ.get("DYNO", "?")
INTERNET = "198.51.100.10"


def log(message):
    print(message, flush=True)


def hit(what, peer):
    log("victim-hit %s from %s" % (what, peer))


def tcp_listener(family, address):
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(address)
    sock.listen(64)
    while True:
        conn, peer = sock.accept()
        hit("tcp %s" % (address[1],), peer)
        conn.close()


def udp_listener(family, address, group=None):
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    sock.bind(address)
    if group:
        mreq = struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton("0.0.0.0"))
        sock.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreq)
    while True:
        _, peer = sock.recvfrom(2048)
        hit("udp %s" % (address[1],), peer)


def abstract_listener():
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind("\0victim-secret")
    sock.listen(8)
    while True:
        conn, _ = sock.accept()
        hit("unix @victim-secret", "?")
        conn.close()


def outbound():
    """A long-lived connection out: there is something to see in the victim's tables."""
    while True:
        try:
            conn = socket.create_connection((INTERNET, 7000), timeout=3)
            log("victim-outbound connected")
            conn.settimeout(None)
            while conn.recv(1024):
                pass
        except OSError as e:
            log("victim-outbound failed: %s" % e)
        time.sleep(1)


def outbound_once(port):
    try:
        socket.create_connection((INTERNET, port), timeout=3).close()
        return "outbound ok"
    except OSError as e:
        return "outbound failed: %s" % e


class Web(socketserver.StreamRequestHandler):
    def handle(self):
        line = self.rfile.readline(8192).decode("latin-1").split()
        while self.rfile.readline(8192).strip():
            pass
        path = line[1] if len(line) > 1 else "/"
        if path.startswith("/outbound?port="):
            body = outbound_once(int(path.split("=", 1)[1]))
        else:
            body = "victim %s" % DYNO
        body = body.encode()
        self.wfile.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
            + body
        )


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 128


def start(target, *args):
    threading.Thread(target=target, args=args, daemon=True).start()


if __name__ == "__main__":
    start(tcp_listener, socket.AF_INET, ("0.0.0.0", 6001))
    start(tcp_listener, socket.AF_INET6, ("::", 6003))
    start(udp_listener, socket.AF_INET, ("0.0.0.0", 6002), "239.1.1.1")
    start(udp_listener, socket.AF_INET6, ("::", 6004))
    start(abstract_listener)
    start(outbound)
    if "PORT" in os.environ:
        Server(("0.0.0.0", int(os.environ["PORT"])), Web).serve_forever()
    while True:
        time.sleep(3600)
