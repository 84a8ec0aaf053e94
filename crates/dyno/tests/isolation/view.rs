//! Escaping the view: the attacker sees its own processes, mounts, devices, cgroup and
//! environment, and nothing of the host, the daemon's state or other apps.

use std::time::Duration;

use crate::record::*;
use crate::rig::*;

const T: Duration = Duration::from_secs(20);

/// Strings that only the host's side knows: the test's scratch dir (state root, data dir, API
/// socket), the app dirs, the worktree.
fn host_markers(rig: &Rig) -> Vec<String> {
    let scratch = rig.up.scratch.display().to_string();
    let leaf = scratch.rsplit('/').next().unwrap_or_default().to_string();
    vec![
        scratch,
        leaf,
        "dyno-up-app-".into(),
        "/work".into(),
        "/target/".into(),
    ]
}

#[test]
fn proc_shows_only_the_dynos_own_processes() {
    const EXPECT: &str = "/proc lists only the dyno's processes (its PID 1, the app and what it started): no victim, daemon or host process";
    attack(
        Attack {
            test: "proc_shows_only_the_dynos_own_processes",
            category: VIEW,
            attack: "list every process in /proc (cmdline, uid)",
            expect: EXPECT,
            others: "Docker, podman, Heroku: a pid namespace per container/dyno",
        },
        |rig| {
            let snippet = r#"
procs = {}
for pid in sorted((p for p in os.listdir("/proc") if p.isdigit()), key=int):
    procs[pid] = read("/proc/%s/cmdline" % pid).replace("\0", " ").strip()
done(procs)
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let mut strangers = Vec::new();
            let mut counts = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let procs = run.value();
                let procs = procs.as_object().unwrap();
                counts.push(format!("{dyno}: {}", procs.len()));
                for (pid, cmd) in procs {
                    let cmd = cmd.as_str().unwrap_or_default();
                    let ours = cmd.is_empty()
                        || cmd.starts_with("dyno __init")
                        || cmd.contains("agent.py")
                        || cmd.starts_with("/usr/bin/python3 -c")
                        || cmd.starts_with("python3 -c");
                    if !ours {
                        strangers.push(format!("{dyno} sees pid {pid}: {cmd}"));
                    }
                }
            }
            if strangers.is_empty() {
                Outcome::new(
                    true,
                    "only the dyno's own PID 1, agent and snippet (web, worker)",
                )
            } else {
                Outcome::new(
                    false,
                    format!("{}; {}", counts.join(", "), strangers.join("; ")),
                )
            }
        },
    );
}

#[test]
fn proc_1_root_and_environ_lead_nowhere() {
    const EXPECT: &str = "/proc/1/root is refused or is the dyno's own root; /proc/1/environ is refused or holds the dyno's env only";
    attack(
        Attack {
            test: "proc_1_root_and_environ_lead_nowhere",
            category: VIEW,
            attack: "walk /proc/1/root and read /proc/1/environ (PID 1 of the dyno)",
            expect: EXPECT,
            others: "Docker, podman: PID 1 is the container's own, /proc/1/root its own root; Heroku: same",
        },
        |rig| {
            let snippet = r#"
try:
    root = sorted(os.listdir("/proc/1/root"))
except OSError as e:
    root = name_of(e.errno)
done({"root": root, "own": sorted(os.listdir("/")), "environ": read("/proc/1/environ")})
"#;
            let run = rig.run_web(snippet, T).value();
            let root_ok = run["root"].is_string() || run["root"] == run["own"];
            let environ = run["environ"].as_str().unwrap_or_default();
            let environ_ok = environ.starts_with('!')
                || !environ.split('\0').any(|kv| kv.starts_with("CARGO") || kv.starts_with("NEXTEST"));
            let root = match run["root"].as_str() {
                Some(e) => e.to_string(),
                None => "the dyno's own /".into(),
            };
            let environ = match environ.strip_prefix('!') {
                Some(e) => e.to_string(),
                None => "readable".into(),
            };
            Outcome::new(root_ok && environ_ok, format!("/proc/1/root: {root}; /proc/1/environ: {environ}"))
        },
    );
}

#[test]
fn mountinfo_shows_no_host_paths() {
    const EXPECT: &str = "/proc/self/mountinfo names no host path of the daemon's state, data dir, slugs or other apps";
    attack(
        Attack {
            test: "mountinfo_shows_no_host_paths",
            category: VIEW,
            attack: "read /proc/self/mountinfo (mount roots, sources and options)",
            expect: EXPECT,
            others: "Docker, podman: overlay options name /var/lib/docker/overlay2/<id>/… (host layout and layer ids leak); Heroku: LXC, similar",
        },
        |rig| {
            let snippet = r#"done(read("/proc/self/mountinfo"))"#;
            let (web, worker) = rig.run_both(snippet, T);
            let markers = host_markers(rig);
            let mut leaks = Vec::new();
            let mut mounts = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let text = run.value().as_str().unwrap_or_default().to_string();
                for line in text.lines() {
                    let fields: Vec<&str> = line.split(' ').collect();
                    if dyno == "web" && fields.len() > 4 {
                        let fstype = line.split(" - ").nth(1).and_then(|r| r.split(' ').next()).unwrap_or("?");
                        mounts.push(format!("{} ({fstype})", fields[4]));
                    }
                    for marker in &markers {
                        if line.contains(marker.as_str()) {
                            // The leaking field, with the per-run part masked.
                            let field = fields
                                .iter()
                                .flat_map(|f| f.split(','))
                                .find(|f| f.contains(marker.as_str()))
                                .unwrap_or("?");
                            leaks.push(format!(
                                "{dyno} {}: {}",
                                fields.get(4).unwrap_or(&"?"),
                                mask(field, &rig.up.scratch.display().to_string())
                            ));
                            break;
                        }
                    }
                }
            }
            leaks.sort();
            leaks.dedup();
            let shows = format!("mounts: {}", mounts.join(", "));
            if leaks.is_empty() {
                Outcome::new(true, format!("no host path; {shows}"))
            } else {
                Outcome::new(false, format!("host paths: {}; {shows}", leaks.join("; ")))
            }
        },
    );
}

/// `field` with the scratch dir (and the dyno's per-run names under it) masked.
fn mask(field: &str, scratch: &str) -> String {
    let leaf = scratch.rsplit('/').next().unwrap_or_default();
    let masked = field
        .replace(scratch, "<scratch>")
        .replace(leaf, "<scratch>");
    // Per-run names below the state root and slug ids: keep the shape, not the value.
    masked
        .split('/')
        .map(|part| {
            if part.chars().filter(|c| c.is_ascii_digit()).count() >= 3 && part.len() > 6 {
                "<id>"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

#[test]
fn sys_shows_no_host_devices_or_cgroups() {
    const EXPECT: &str = "/sys/class/net and /sys/devices/virtual/net show lo and eth0 only; /sys/fs/cgroup shows nothing";
    attack(
        Attack {
            test: "sys_shows_no_host_devices_or_cgroups",
            category: VIEW,
            attack: "list host network devices and cgroups under /sys",
            expect: EXPECT,
            others: "Docker, podman: sysfs of the container's netns (read-only), /sys/fs/cgroup the container's own cgroup; Heroku: LXC, similar",
        },
        |rig| {
            let snippet = r#"
def ls(path):
    try:
        return sorted(os.listdir(path))
    except OSError as e:
        return name_of(e.errno)
done({p: ls(p) for p in ["/sys/class/net", "/sys/devices/virtual/net", "/sys/fs/cgroup"]})
"#;
            let (web, worker) = rig.run_both(snippet, T);
            let mut pass = true;
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let net = serde_json::json!(["eth0", "lo"]);
                let virt = &v["/sys/devices/virtual/net"];
                let cg = &v["/sys/fs/cgroup"];
                pass &= v["/sys/class/net"] == net
                    && (virt == &net || virt == &serde_json::json!(["lo"]))
                    && (cg.is_string() || cg.as_array().is_some_and(|a| a.is_empty()));
                seen.push(format!("{dyno}: /sys/class/net {}, /sys/devices/virtual/net {virt}, /sys/fs/cgroup {cg}", v["/sys/class/net"]));
            }
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn cgroup_files_show_only_the_dynos_own_cgroup() {
    const EXPECT: &str = "/proc/self/cgroup and /proc/1/cgroup show `/` in every hierarchy (a cgroup namespace): no host path";
    attack(
        Attack {
            test: "cgroup_files_show_only_the_dynos_own_cgroup",
            category: VIEW,
            attack: "read /proc/self/cgroup and /proc/1/cgroup",
            expect: EXPECT,
            others: "Docker, podman: cgroup namespace by default on cgroup v2 (private), host paths on v1; Heroku: LXC",
        },
        |rig| {
            let snippet = r#"done({"self": read("/proc/self/cgroup"), "init": read("/proc/1/cgroup")})"#;
            let (web, worker) = rig.run_both(snippet, T);
            let mut paths = Vec::new();
            for run in [web, worker] {
                let v = run.value();
                for key in ["self", "init"] {
                    for line in v[key].as_str().unwrap_or_default().lines() {
                        let path = line.splitn(3, ':').nth(2).unwrap_or("?").to_string();
                        paths.push(path);
                    }
                }
            }
            let foreign: Vec<&String> = paths.iter().filter(|p| p.as_str() != "/").collect();
            if foreign.is_empty() && !paths.is_empty() {
                Outcome::new(true, "every hierarchy shows / (web, worker)")
            } else {
                let mut foreign: Vec<String> = foreign.iter().map(|p| p.to_string()).collect();
                foreign.sort();
                foreign.dedup();
                Outcome::new(false, format!("paths shown: {}", foreign.join(", ")))
            }
        },
    );
}

#[test]
fn state_and_data_dirs_are_not_in_view() {
    const EXPECT: &str = "the daemon's state root, the victim's state dir, the data dir and /run/dyno do not exist in the dyno's view";
    attack(
        Attack {
            test: "state_and_data_dirs_are_not_in_view",
            category: VIEW,
            attack: "open the daemon's state root, the victim's state dir, the data dir, /run/dyno, /var/lib/dyno",
            expect: EXPECT,
            others: "Docker, podman: a container sees only its image and volumes; Heroku: the slug and an ephemeral fs",
        },
        |rig| {
            let scratch = rig.up.scratch.clone();
            let paths = vec![
                scratch.join("state").display().to_string(),
                rig.dyno("victim", "web.1").state.0.display().to_string(),
                scratch.join("data").display().to_string(),
                rig.up.api_socket().display().to_string(),
                "/run/dyno".into(),
                "/var/lib/dyno".into(),
            ];
            let snippet = format!("done({{p: outcome(os.stat, p) for p in {}}})", serde_json::to_string(&paths).unwrap());
            let v = rig.run_web(&snippet, T).value();
            let seen: Vec<String> = v.as_object().unwrap().values().map(|r| r.as_str().unwrap_or("?").to_string()).collect();
            let pass = seen.iter().all(|r| r != "ok");
            let mut kinds = seen.clone();
            kinds.sort();
            kinds.dedup();
            Outcome::new(pass, format!("{} paths: {}", seen.len(), kinds.join(", ")))
        },
    );
}

#[test]
fn other_apps_files_and_secrets_are_not_in_view() {
    const EXPECT: &str = "the victim's slug is not in view (its app dir, its secret file); no readable file holds the victim's secret";
    attack(
        Attack {
            test: "other_apps_files_and_secrets_are_not_in_view",
            category: VIEW,
            attack: "open the victim's app dir, search the whole view (bounded) for its files and secrets, read every /proc/*/environ",
            expect: EXPECT,
            others: "Docker, podman: other containers' layers are not mounted in; Heroku: each dyno has only its own slug",
        },
        |rig| {
            let victim_dir = rig.dyno("victim", "web.1").app_dir.display().to_string();
            let snippet = format!(
                r#"
secrets = [{SECRET_VALUE:?}, {SECRET_FILE_TEXT:?}]
found, seen = [], 0
for top in ["/app", "/etc", "/tmp", "/dev", "/run", "/var", "/home", "/root", "/opt", "/srv", "/mnt", "/media"]:
    for dirpath, dirs, files in os.walk(top):
        for f in files:
            seen += 1
            path = os.path.join(dirpath, f)
            if f in ("secret.txt", "victim.py"):
                found.append(path)
            # Regular files only: reading a device (/dev/ptmx) may block.
            elif seen < 20000 and os.path.isfile(path) and not os.path.islink(path) and not dirpath.startswith("/dev"):
                text = read(path, 1 << 16)
                if any(s in text for s in secrets):
                    found.append(path)
for pid in (p for p in os.listdir("/proc") if p.isdigit()):
    if any(s in read("/proc/%s/environ" % pid) for s in secrets):
        found.append("/proc/%s/environ" % pid)
done({{"found": found, "victim_dir": outcome(os.stat, {victim_dir:?})}})
"#
            );
            let (web, worker) = rig.run_both(&snippet, T);
            let mut pass = true;
            let mut seen = Vec::new();
            for (dyno, run) in [("web", web), ("worker", worker)] {
                let v = run.value();
                let found = v["found"].as_array().cloned().unwrap_or_default();
                pass &= found.is_empty() && v["victim_dir"] != "ok";
                seen.push(format!("{dyno}: victim's dir {}, secrets found {:?}", v["victim_dir"].as_str().unwrap_or("?"), found));
            }
            Outcome::new(pass, seen.join("; "))
        },
    );
}

#[test]
fn the_host_environment_is_not_inherited() {
    const EXPECT: &str = "the dyno's environment holds its config vars, PORT, DYNO, HOME, PATH (and what bash and Python add) only: nothing of the host or the daemon";
    attack(
        Attack {
            test: "the_host_environment_is_not_inherited",
            category: VIEW,
            attack: "read the environment (os.environ) for host and daemon variables",
            expect: EXPECT,
            others: "Docker, podman: the image's ENV plus -e only; Heroku: config vars plus the platform's (PORT, DYNO, …)",
        },
        |rig| {
            let snippet = r#"done(sorted(os.environ))"#;
            let (web, worker) = rig.run_both(snippet, T);
            let allowed = ["PATH", "HOME", "DYNO", "PORT", "PWD", "SHLVL", "_", "LC_CTYPE", "OLDPWD"];
            let mut extra = Vec::new();
            for run in [web, worker] {
                for key in run.value().as_array().unwrap() {
                    let key = key.as_str().unwrap_or_default().to_string();
                    if !allowed.contains(&key.as_str()) && !extra.contains(&key) {
                        extra.push(key);
                    }
                }
            }
            if extra.is_empty() {
                Outcome::new(true, "only PATH, HOME, DYNO, PORT and the shell's own")
            } else {
                Outcome::new(false, format!("extra variables: {}", extra.join(", ")))
            }
        },
    );
}
