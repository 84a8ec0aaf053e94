#!/usr/bin/env bash
# A dyno's network, end to end, until the app runner exists: `dyno net up`, an unprivileged app
# listening on $PORT inside the dyno, the router's way in (and every other way refused), then
# `dyno net down` — without touching this host's network.
#
# Usage, as root, from anywhere (after `cargo build --release` at the repo root):
#     examples/net-demo.sh
# Environment: DYNO=path/to/dyno (default target/release/dyno, relative to the repo root),
#              PYTHON=path/to/python3 (default /usr/bin/python3; the app runs it as uid 65534).
#
# How it stays off the host's network: the script re-executes itself in a throwaway network
# namespace (`unshare --net`, plus a private mount namespace so that not even a bind mount of a
# dyno namespace can outlive it), which plays the host: the dyno's host link, routes, sysctls and
# nf_tables table live there and vanish with it. It has `lo` (with a documentation address as
# the host's own) and no uplink. Run and state dirs are in a temporary dir under /run; a trap
# removes everything on any exit.
set -euo pipefail

SELF=$(readlink -f "${BASH_SOURCE[0]}")
cd "$(dirname "$SELF")/.."

DYNO=${DYNO:-target/release/dyno}
PYTHON=${PYTHON:-/usr/bin/python3}
NAME=web1
PORT=8000        # the dyno's $PORT: open to the router
OTHER_PORT=8001  # also listening inside the dyno, but never open from outside
NOBODY=65534
ROUTER_MARK=0x6479
HOST_ADDR=192.0.2.1  # the "host"'s own address (TEST-NET-1), see below

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
die() { printf 'net-demo: %s\n' "$*" >&2; exit 1; }

if [[ ${1:-} != --inside ]]; then
    # ---- On the real host: check, make the temp dir, run the demo in its own namespaces. ----
    [[ $EUID -eq 0 ]] || die "run me as root: dyno networks need CAP_NET_ADMIN and CAP_SYS_ADMIN"
    [[ -x $DYNO ]] || die "no dyno binary at $DYNO: run \`cargo build --release\` first (or set DYNO=)"
    [[ -x $PYTHON ]] || die "no python3 at $PYTHON: apt-get install python3 (or set PYTHON=)"
    for tool in unshare nsenter setpriv ip ss; do
        command -v "$tool" >/dev/null || die "$tool is missing (Debian: util-linux, iproute2)"
    done
    DYNO=$(readlink -f "$DYNO")
    export DYNO PYTHON
    # What the demo could change on the real host if it leaked out of its namespaces (compared
    # before and after, so that a host really running dyno is no false alarm).
    host_state() {
        say "dy* links: $(ip -o link show | awk -F': ' '$2 ~ /^dy/ { print $2 }' | sort | xargs)"
        say "dyno namespaces: $(find /run/netns -maxdepth 1 -name 'dyno-*' 2>/dev/null | sort | xargs)"
        if command -v nft >/dev/null; then
            say "nf_tables: $(nft list tables | grep dyno | xargs)"
        fi
        say "ip_forward: $(cat /proc/sys/net/ipv4/ip_forward)"
    }
    state_before=$(host_state)
    work=$(mktemp -d /run/dyno-demo.XXXXXX)
    # `outer_done` runs on any exit of the outer part: the inner part has removed what dyno made
    # (and its namespaces took the rest with them); here the temp dir goes, then the real host is
    # checked.
    outer_done() {
        local status=$?
        trap - EXIT
        rm -rf -- "$work"
        local left=()
        [[ ! -e $work ]] || left+=("dir $work")
        grep -q " $work" /proc/self/mountinfo && left+=("mounts under $work")
        pgrep -f -- "$work" >/dev/null && left+=("processes of the demo: $(pgrep -af -- "$work")")
        local state_after
        state_after=$(host_state)
        [[ $state_after == "$state_before" ]] ||
            left+=("changes on the host: before: [$state_before] after: [$state_after]")
        if ((${#left[@]})); then
            say "demo FAILED: left behind: ${left[*]}" >&2
            exit 1
        fi
        if ((status == 0)); then
            say "demo finished: everything removed"
        else
            say "demo FAILED (status $status); everything removed" >&2
        fi
        exit "$status"
    }
    trap outer_done EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    say "dyno: $DYNO ($("$DYNO" --version))"
    say "the demo's \"host\" is a throwaway network namespace; run and state dirs in $work"
    unshare --net --mount --propagation private -- bash "$SELF" --inside "$work"
    exit 0
fi

# ---- Inside the throwaway network (and mount) namespace, which plays the host. ----
work=$2
run_dir=$work/netns
state_dir=$work/state
www=$work/www
netns=$run_dir/dyno-$NAME
server_pids=()

# `dyno ARGS`, with the demo's own run and state dirs; the command is shown as typed.
dyno() {
    say "\$ dyno $*"
    "$DYNO" "$@" --run-dir "$run_dir" --state-dir "$state_dir"
}

# Runs a command inside the dyno's network namespace.
in_dyno() { nsenter --net="$netns" "$@"; }

stop_servers() {
    local pid
    for pid in "${server_pids[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        if kill -0 "$pid" 2>/dev/null; then
            say "net-demo: the app (PID $pid) did not stop" >&2
            return 1
        fi
    done
    server_pids=()
}

inner_done() {
    local status=$?
    trap - EXIT
    step "clean up: stop the app, dyno net reset"
    stop_servers || status=1
    dyno net reset || status=1
    local left
    left=$(find "$run_dir" -name 'dyno-*' 2>/dev/null)
    [[ -z $left ]] || { say "left in the run dir: $left" >&2; status=1; }
    if grep -q " $work/" /proc/self/mountinfo; then
        say "mounts left under $work" >&2
        status=1
    fi
    if command -v nft >/dev/null && nft list tables | grep -q 'inet dyno'; then
        say "the dyno nf_tables table is still there" >&2
        status=1
    fi
    exit "$status"
}
trap inner_done EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# The host's own address: a real host has one on its uplink, and it is the source of the router's
# connections (dyno host links have none). Here there is no uplink: a documentation address on lo.
ip link set lo up
ip addr add "$HOST_ADDR/32" dev lo

# The "router": fetches / from HOST PORT [MARK], its socket marked like the router's if MARK.
# Exit 0: HTTP answer; 2: no answer within 1 s (dropped); 3: refused; 1: other errors.
cat >"$work/fetch.py" <<'EOF'
import http.client, socket, sys

host, port = sys.argv[1], int(sys.argv[2])
mark = int(sys.argv[3], 0) if len(sys.argv) > 3 else None
SO_MARK = getattr(socket, "SO_MARK", 36)  # Python < 3.12 lacks the name


class Connection(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if mark is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))


how = f"GET http://{host}:{port}/" + (f" (SO_MARK {mark:#x})" if mark is not None else " (no mark)")
try:
    c = Connection(host, port, timeout=1.0)
    c.request("GET", "/")
    r = c.getresponse()
    body = r.read().decode().strip()
    print(f"  {how}: HTTP {r.status} {r.reason}: {body}")
except TimeoutError:
    print(f"  {how}: no answer within 1 s")
    sys.exit(2)
except ConnectionRefusedError:
    print(f"  {how}: connection refused")
    sys.exit(3)
except OSError as e:
    print(f"  {how}: {e}")
    sys.exit(1)
except KeyboardInterrupt:
    sys.exit(130)
EOF
fetch() { "$PYTHON" "$work/fetch.py" "$@"; }

# The app's files, readable by the unprivileged user.
chmod 0711 "$work"
mkdir -m 0755 "$www"
say "hello from dyno $NAME" >"$www/index.html"
chmod 0644 "$www/index.html" "$work/fetch.py"

step "create the dyno's network"
dyno net up "$NAME" --port "$PORT"

step "inside the dyno: lo and eth0 with one /32, default route via the link-local gateway"
say "\$ nsenter --net=$netns ip addr"
in_dyno ip addr
say "\$ nsenter --net=$netns ip route"
in_dyno ip route
say "on the \"host\": one route to the dyno, over its own link"
say "\$ ip route"
ip route

step "start the app inside the dyno, as uid $NOBODY: python3 -m http.server on ports $PORT and $OTHER_PORT"
for port in "$PORT" "$OTHER_PORT"; do
    # nsenter and setpriv exec what follows: $! is the server's own PID. (Not through a shell
    # function: in the background that would be a subshell, and killing it would orphan the app.)
    nsenter --net="$netns" setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups \
        "$PYTHON" -m http.server "$port" --bind 0.0.0.0 --directory "$www" \
        >>"$work/app.log" 2>&1 &
    server_pids+=("$!")
done
for port in "$PORT" "$OTHER_PORT"; do
    for ((i = 0; ; i++)); do
        [[ -n $(in_dyno ss -Hltn "sport = :$port") ]] && break
        for pid in "${server_pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || die "the app exited: $(cat "$work/app.log")"
        done
        ((i < 100)) || die "nothing listens on port $port in the dyno after 10 s"
        sleep 0.1
    done
done
say "\$ nsenter --net=$netns ss -ltne"
in_dyno ss -ltne

ip=$(in_dyno ip -o -4 addr show dev eth0 | awk '{ split($4, a, "/"); print a[1] }')
[[ -n $ip ]] || die "eth0 has no address"

step "the router (socket mark $ROUTER_MARK) reaches \$PORT $PORT"
fetch "$ip" "$PORT" "$ROUTER_MARK" || die "the router could not reach the dyno's \$PORT"

step "anyone else on the host does not: the same request without the mark is dropped"
rc=0
fetch "$ip" "$PORT" || rc=$?
((rc == 2)) || die "expected the unmarked request to be dropped (status 2), got status $rc"

step "nor does the router reach any other port, although the app listens on $OTHER_PORT"
rc=0
fetch "$ip" "$OTHER_PORT" "$ROUTER_MARK" || rc=$?
((rc == 2)) || die "expected port $OTHER_PORT to be dropped (status 2), got status $rc"
say "inside the dyno, port $OTHER_PORT does answer:"
in_dyno setpriv --reuid="$NOBODY" --regid="$NOBODY" --clear-groups \
    "$PYTHON" "$work/fetch.py" 127.0.0.1 "$OTHER_PORT" ||
    die "port $OTHER_PORT does not answer inside the dyno"

step "list the dyno networks"
dyno net ls

step "stop the app, remove the dyno's network"
stop_servers
dyno net down "$NAME"
for ((i = 0; ; i++)); do
    # The kernel removes the namespace, and the veth pair in it, in the background.
    [[ -z $(ip -o link show | grep ": dy$NAME[:@]" || true) ]] && break
    ((i < 300)) || die "host link dy$NAME still there 30 s after down"
    sleep 0.1
done
[[ ! -e $netns ]] || die "$netns still there after down"
say "host link dy$NAME and namespace dyno-$NAME are gone"
dyno net ls
