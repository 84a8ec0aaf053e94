# Helpers prepended to every attack snippet (see rig.rs). A snippet ends with done(value): the
# last stdout line is that value as JSON, which the test reads.
import ctypes
import errno
import json
import os
import socket
import sys
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long


def name_of(e):
    return errno.errorcode.get(e, str(e))


def outcome(f, *args):
    """"ok", or the errno's name ("EPERM"), "timeout", or the exception's name."""
    try:
        f(*args)
        return "ok"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return name_of(e.errno) if e.errno else type(e).__name__


def sc(nr, *args):
    """A raw syscall: (return value, errno name or None)."""
    conv = [a if isinstance(a, (bytes, ctypes.Array, ctypes.c_void_p)) else ctypes.c_long(a) for a in args]
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *conv)
    return r, (name_of(ctypes.get_errno()) if r == -1 else None)


def tcp(host, port, timeout=1.0, source=None):
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        if source:
            s.bind(source)
        s.connect((host, port) if family == socket.AF_INET else socket.getaddrinfo(host, port, family)[0][4])
        return "connected"
    except socket.timeout:
        return "timeout"
    except OSError as e:
        return name_of(e.errno)
    finally:
        s.close()


def udp(host, port, wait=0.5, broadcast=False):
    """Sends a datagram; "reply" if anything came back within `wait`, else "no reply" (or why
    it could not be sent)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, socket.SOCK_DGRAM)
    s.settimeout(wait)
    try:
        if broadcast:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        target = (host, port) if family == socket.AF_INET else socket.getaddrinfo(host, port, family)[0][4]
        s.sendto(b"attacker", target)
        s.recvfrom(2048)
        return "reply"
    except socket.timeout:
        return "no reply"
    except OSError as e:
        return name_of(e.errno)
    finally:
        s.close()


def parallel(f, items, width=64):
    """f(item) for every item, `width` at a time: {item: result}."""
    results = {}
    items = list(items)
    lock = threading.Lock()

    def worker():
        while True:
            with lock:
                if not items:
                    return
                item = items.pop()
            value = f(item)
            with lock:
                results[item] = value

    threads = [threading.Thread(target=worker) for _ in range(min(width, len(items)))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def log(message):
    """A line in the dyno's log (fd 3 is the dyno's stdout)."""
    os.write(3, (message + "\n").encode())


def read(path, limit=1 << 20):
    try:
        with open(path, "rb") as f:
            return f.read(limit).decode("utf-8", "replace")
    except OSError as e:
        return "!" + name_of(e.errno)


def done(value):
    sys.stdout.write("\n" + json.dumps(value) + "\n")
    sys.stdout.flush()


