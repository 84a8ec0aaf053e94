//! The two apps of `dyno bench isolation`, written into the bench's scratch dir and deployed
//! through the API: the victim (nginx answering on `$PORT`) and the abuser (a web that only
//! listens, and a worker that runs the abuse named by its `ABUSE` config var).

use std::path::Path;

/// The abuses, in the order they run.
pub(super) const KINDS: [&str; 7] = [
    "forkbomb",
    "memory",
    "tmpfs",
    "sockets",
    "disk",
    "cpu",
    "denied_syscalls",
];

/// nginx rather than `examples/hello`: it answers in microseconds and logs nothing per request,
/// so what the victim's latency shows is the abuse, not Python or the log pipeline. Its config
/// gets `$PORT` at start; everything it writes goes to the dyno's /tmp.
const VICTIM_PROCFILE: &str = "web: sed \"s/@PORT@/$PORT/\" /app/nginx.conf.in > /tmp/nginx.conf \
    && exec /usr/sbin/nginx -p /tmp/ -e stderr -c /tmp/nginx.conf\n";

const VICTIM_NGINX: &str = "worker_processes 1;\ndaemon off;\npid /tmp/nginx.pid;\n\
    error_log stderr warn;\nevents { worker_connections 1024; }\n\
    http {\n  access_log off;\n  keepalive_requests 100000000;\n  keepalive_timeout 90s;\n  \
    client_body_temp_path /tmp/body;\n  proxy_temp_path /tmp/proxy;\n  \
    fastcgi_temp_path /tmp/fastcgi;\n  uwsgi_temp_path /tmp/uwsgi;\n  scgi_temp_path /tmp/scgi;\n  \
    server { listen @PORT@; location / { return 200 \"ok\\n\"; } }\n}\n";

const ABUSER_PROCFILE: &str = "web: exec python3 /app/abuse.py web\n\
    worker: exec python3 /app/abuse.py \"${ABUSE:-idle}\"\n";

/// Each abuse runs until the dyno is stopped (the bench scales the worker back to 0); each says
/// what it reached on stdout, so that the bench can show whether it worked.
const ABUSE_PY: &str = r#""""The abuser: one abuse per run, chosen by the first argument, until the dyno stops."""
import ctypes, os, socket, sys, threading, time

MIB = 1 << 20


def say(msg):
    print(msg, flush=True)


def hold():
    while True:
        time.sleep(3600)


def web():
    # Only listens on $PORT (so the dyno is up); nobody sends it anything.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(os.environ["PORT"])))
    s.listen(16)
    hold()


def forkbomb():
    # Every process forks as fast as it can; at the pids limit every one of them retries at
    # once, forever (each failed fork costs the kernel a copy of the process first).
    first, failed = os.getpid(), False
    say("forkbomb: every process forks as fast as it can")
    while True:
        try:
            os.fork()
        except OSError as e:
            if not failed and os.getpid() == first:
                failed = True
                say(f"forkbomb: fork failed ({e.strerror}): at the pids limit")


def fill(kind, dirs):
    # 16 MiB files, round robin over `dirs`, until a write fails (or the OOM killer ends us).
    written, n = 0, 0
    chunk = b"\x01" * (16 * MIB)
    try:
        while True:
            d = dirs[n % len(dirs)]
            with open(f"{d}/fill-{n}", "wb") as f:
                f.write(chunk)
            n += 1
            written += 16
            if written % 128 == 0:
                say(f"{kind}: {written} MiB written")
    except OSError as e:
        say(f"{kind}: write failed after {written} MiB: {e.strerror}")
    hold()


def memory():
    # Anonymous memory, touched, 16 MiB at a time, past the quota.
    held = []
    while True:
        held.append(b"\x01" * (16 * MIB))
        if len(held) % 8 == 0:
            say(f"memory: {16 * len(held)} MiB allocated")


def sockets():
    # 2 listeners in this dyno, 2 processes accepting, 2 connecting: up to 30000 connections,
    # 60000 sockets, each process below its open-files limit.
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    per = min(15000, hard - 100)
    listeners = []
    for port in (7001, 7002):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen(4096)
        listeners.append(s)
    for s in listeners:
        if os.fork() == 0:
            held = []
            while True:
                held.append(s.accept()[0])
    for port in (7001, 7002):
        if os.fork() == 0:
            held = []
            try:
                while len(held) < per:
                    held.append(socket.create_connection(("127.0.0.1", port)))
                say(f"sockets: {len(held)} connections to port {port}")
            except OSError as e:
                say(f"sockets: connect failed after {len(held)} to port {port}: {e.strerror}")
            hold()
    hold()


def cpu():
    # One spinning process per CPU the dyno can see.
    for _ in range(max(1, os.cpu_count() or 1) - 1):
        if os.fork() == 0:
            break
    say(f"cpu: pid {os.getpid()} spinning")
    while True:
        pass


def denied_syscalls():
    # keyctl (denied by the profile: the shim answers EPERM, at most 1000 a second) in a loop
    # from 8 threads; ctypes lets go of the GIL during the call.
    libc = ctypes.CDLL(None, use_errno=True)
    nr = 250  # keyctl on x86_64
    calls = [0]

    def loop():
        while True:
            libc.syscall(nr, 0, 0, 0, 0, 0)
            calls[0] += 1

    for _ in range(8):
        threading.Thread(target=loop, daemon=True).start()
    while True:
        before = calls[0]
        time.sleep(5)
        say(f"denied_syscalls: {(calls[0] - before) / 5:.0f} keyctl calls a second")


KINDS = {
    "web": web,
    "idle": hold,
    "forkbomb": forkbomb,
    "memory": memory,
    "tmpfs": lambda: fill("tmpfs", ["/tmp", "/dev/shm"]),
    "sockets": sockets,
    "disk": lambda: fill("disk", ["/app"]),
    "cpu": cpu,
    "denied_syscalls": denied_syscalls,
}

KINDS[sys.argv[1]]()
"#;

/// Writes both apps under `dir` (`victim/`, `abuser/`), readable by the apps' users.
pub(crate) fn write(dir: &Path) -> Result<(), String> {
    let files: [(&str, &str, &str); 4] = [
        ("victim", "Procfile", VICTIM_PROCFILE),
        ("victim", "nginx.conf.in", VICTIM_NGINX),
        ("abuser", "Procfile", ABUSER_PROCFILE),
        ("abuser", "abuse.py", ABUSE_PY),
    ];
    for (app, name, text) in files {
        let app_dir = dir.join(app);
        std::fs::create_dir_all(&app_dir).map_err(|e| format!("{}: {e}", app_dir.display()))?;
        let path = app_dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}
