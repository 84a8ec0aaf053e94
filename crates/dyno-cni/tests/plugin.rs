//! `dyno-cni` called as a runtime calls it, inside a lab "host" namespace, on container
//! namespaces this test makes and binds under its own scratch dir. Needs root.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use dyno_net::lab::Lab;
use dyno_net::nft::Firewall;
use dyno_net::ns::{self, Netns};
use serde_json::{json, Value};

static SCRATCH: AtomicU32 = AtomicU32::new(0);

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "dyno-cni's plugin tests need root (network namespaces, nf_tables)"
    );
}

/// A lab host, a scratch dir with a `netns` dir for containers and a `data` dir for leases.
struct World {
    lab: Lab,
    dir: PathBuf,
    containers: Vec<PathBuf>,
}

impl World {
    fn new(tag: &str) -> World {
        require_root();
        let n = SCRATCH.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/run/dynocni-test-{}-{n}", std::process::id()));
        std::fs::create_dir_all(dir.join("netns")).expect("scratch dir");
        World {
            lab: Lab::new(tag).expect("lab"),
            dir,
            containers: Vec::new(),
        }
    }

    /// A new container namespace, bound at `netns/<name>`.
    fn container(&mut self, name: &str) -> String {
        let (netns, ()) = Netns::create(|| ()).expect("container netns");
        let path = self.dir.join("netns").join(name);
        netns.bind(&path).expect("bind container netns");
        self.containers.push(path.clone());
        path.to_string_lossy().into_owned()
    }

    fn config(&self, version: &str, extra: Value) -> Value {
        let mut config = json!({
            "cniVersion": version,
            "name": "dynotest",
            "type": "dyno-cni",
            "subnet": "10.215.0.0/24",
            "dataDir": self.dir.join("data").to_string_lossy(),
            "someUnknownKey": {"a": 1},
            "capabilities": {"portMappings": true},
        });
        if let (Some(c), Some(e)) = (config.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                c.insert(k.clone(), v.clone());
            }
        }
        config
    }

    fn call(&self, env: &[(&str, &str)], stdin: &[u8]) -> Output {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_dyno-cni"));
        cmd.env_clear()
            .env("CNI_PATH", "/nonexistent")
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        ns::command_in(&mut cmd, self.lab.host.netns(), None).expect("command_in");
        let mut child = cmd.spawn().expect("spawn dyno-cni");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(stdin)
            .expect("write stdin");
        child.wait_with_output().expect("dyno-cni output")
    }

    fn op(&self, command: &str, id: &str, netns: &str, ifname: &str, config: &Value) -> Output {
        self.call(
            &[
                ("CNI_COMMAND", command),
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
            ],
            config.to_string().as_bytes(),
        )
    }

    fn leases(&self) -> Value {
        let path = self.dir.join("data").join("leases.json");
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(json!({}))
    }

    /// The `exposed` set of the lab host's `inet dyno` table.
    fn exposed(&self) -> Vec<(Ipv4Addr, u16)> {
        self.lab
            .host
            .netns()
            .run(|| Firewall::open().and_then(|mut f| f.exposed()))
            .expect("netns")
            .expect("exposed set")
    }

    fn dy_links(&mut self) -> Vec<String> {
        self.lab
            .host
            .links_with_prefix("dy")
            .expect("links")
            .into_iter()
            .map(|(_, n)| n)
            .collect()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        for path in &self.containers {
            let _ = ns::unbind(path);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "plugin failed: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON result")
}

fn error_code(out: &Output) -> u64 {
    assert!(!out.status.success(), "expected a failure");
    let v: Value = serde_json::from_slice(&out.stdout).expect("CNI error JSON on stdout");
    assert!(v["msg"].is_string() && v["details"].is_string() && v["cniVersion"].is_string());
    v["code"].as_u64().expect("code")
}

fn lease_count(world: &World) -> usize {
    world.leases()["leases"].as_object().map_or(0, |m| m.len())
}

#[test]
fn add_check_del_per_version() {
    let mut world = World::new("cni-basic");
    for (n, version) in ["1.0.0", "0.4.0", "0.3.1", "1.1.0"].iter().enumerate() {
        let id = format!("c{n}");
        let netns = world.container(&id);
        let config = world.config(version, json!({"port": 5000}));
        let result = ok_json(&world.op("ADD", &id, &netns, "eth0", &config));
        assert_eq!(result["cniVersion"], *version);
        let ifaces = result["interfaces"].as_array().expect("interfaces");
        let inside = &ifaces[1];
        assert_eq!(inside["name"], "eth0");
        assert_eq!(inside["sandbox"], netns.as_str());
        assert!(inside["mac"].is_string());
        assert!(ifaces[0]["name"]
            .as_str()
            .expect("host end")
            .starts_with("dy"));
        let ip = &result["ips"][0];
        assert_eq!(ip["gateway"], "169.254.1.1");
        assert_eq!(ip["interface"], 1);
        assert_eq!(ip.get("version").is_some(), version.starts_with("0."));
        let address = ip["address"].as_str().expect("address");
        assert!(address.starts_with("10.215.0.") && address.ends_with("/32"));
        assert_eq!(result["routes"][0]["dst"], "0.0.0.0/0");
        assert_eq!(result["routes"][0]["gw"], "169.254.1.1");

        // Inside: eth0 is ifindex 2, with the /32 and the default route via the gateway.
        let found = dyno_net::inspect::interface(&Netns::open(&netns).expect("open"), "eth0")
            .expect("inspect")
            .expect("eth0 exists");
        assert_eq!(found.index, 2);
        let ip: Ipv4Addr = address.trim_end_matches("/32").parse().expect("ip");
        assert_eq!(found.addresses, vec![(ip, 32)]);
        assert_eq!(found.default_gateways, vec![Ipv4Addr::new(169, 254, 1, 1)]);
        assert_eq!(
            world.exposed(),
            vec![(ip, 5000)],
            "$PORT open to the router"
        );

        let mut with_prev = config.clone();
        with_prev["prevResult"] = result.clone();
        let out = world.op("CHECK", &id, &netns, "eth0", &with_prev);
        assert!(
            out.status.success(),
            "CHECK: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        // A different address in prevResult fails the CHECK.
        let mut wrong = with_prev.clone();
        wrong["prevResult"]["ips"][0]["address"] = json!("10.215.0.250/32");
        assert_eq!(
            error_code(&world.op("CHECK", &id, &netns, "eth0", &wrong)),
            103
        );

        assert!(world
            .op("DEL", &id, &netns, "eth0", &with_prev)
            .status
            .success());
        // Again, and without prevResult, and without a netns.
        assert!(world
            .op("DEL", &id, &netns, "eth0", &config)
            .status
            .success());
        assert!(world.op("DEL", &id, "", "eth0", &config).status.success());
        assert!(world.exposed().is_empty(), "port closed by DEL");
    }
    assert_eq!(lease_count(&world), 0);
    assert!(world.dy_links().is_empty(), "left: {:?}", world.dy_links());
    // Never added.
    let config = world.config("1.0.0", json!({}));
    assert!(world
        .op("DEL", "never", "/nonexistent", "eth0", &config)
        .status
        .success());
}

#[test]
fn existing_ifname_fails_and_leaves_nothing() {
    let mut world = World::new("cni-exists");
    let netns = world.container("a");
    let config = world.config("1.0.0", json!({}));
    ok_json(&world.op("ADD", "a", &netns, "eth0", &config));
    // A second attachment under another id but the same interface name.
    let out = world.op("ADD", "b", &netns, "eth0", &config);
    assert_eq!(error_code(&out), 100);
    assert_eq!(lease_count(&world), 1);
    assert_eq!(world.dy_links().len(), 1);
    assert!(world
        .op("DEL", "a", &netns, "eth0", &config)
        .status
        .success());
    assert_eq!(lease_count(&world), 0);
    assert!(world.dy_links().is_empty());
}

#[test]
fn version_and_error_codes() {
    let world = World::new("cni-errors");
    let dummy = [
        ("CNI_COMMAND", "VERSION"),
        ("CNI_CONTAINERID", "dummy"),
        ("CNI_NETNS", "dummy"),
        ("CNI_IFNAME", "dummy"),
    ];
    let v = ok_json(&world.call(&dummy, br#"{"cniVersion":"1.0.0"}"#));
    assert_eq!(v["cniVersion"], "1.0.0");
    let listed: Vec<&str> = v["supportedVersions"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(listed, ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]);
    ok_json(&world.call(&dummy, b""));

    let add = [
        ("CNI_COMMAND", "ADD"),
        ("CNI_CONTAINERID", "x"),
        ("CNI_NETNS", "/nonexistent"),
        ("CNI_IFNAME", "eth0"),
    ];
    assert_eq!(error_code(&world.call(&add, b"{not json")), 6);
    let config = world.config("1.0.0", json!({}));
    assert_eq!(
        error_code(&world.call(&add[..1], config.to_string().as_bytes())),
        4
    );
    let old = world.config("0.2.0", json!({}));
    let out = world.call(&add, old.to_string().as_bytes());
    assert_eq!(error_code(&out), 1);
    let no_name = json!({"cniVersion": "1.0.0", "type": "dyno-cni"});
    assert_eq!(
        error_code(&world.call(&add, no_name.to_string().as_bytes())),
        7
    );
}

#[test]
fn concurrent_adds_and_dels_and_leases_survive() {
    let mut world = World::new("cni-many");
    let config = world.config("1.0.0", json!({}));
    let netns: Vec<String> = (0..20).map(|i| world.container(&format!("m{i}"))).collect();
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = netns
            .iter()
            .enumerate()
            .map(|(i, path)| {
                let world = &world;
                let config = &config;
                s.spawn(move || ok_json(&world.op("ADD", &format!("m{i}"), path, "eth0", config)))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("thread"))
            .collect()
    });
    let mut addresses: Vec<String> = results
        .iter()
        .map(|r| r["ips"][0]["address"].as_str().expect("address").to_owned())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), 20, "distinct addresses");
    // Every ADD was a separate process: the leases on disk are what they share.
    assert_eq!(lease_count(&world), 20);
    // A new plugin process sees them: the next ADD gets none of the 20.
    let extra = world.container("extra");
    let r = ok_json(&world.op("ADD", "extra", &extra, "eth0", &config));
    let extra_address = r["ips"][0]["address"].as_str().expect("address").to_owned();
    assert!(!addresses.contains(&extra_address));
    assert!(world
        .op("DEL", "extra", &extra, "eth0", &config)
        .status
        .success());

    std::thread::scope(|s| {
        for (i, path) in netns.iter().enumerate() {
            let world = &world;
            let config = &config;
            s.spawn(move || {
                let out = world.op("DEL", &format!("m{i}"), path, "eth0", config);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            });
        }
    });
    assert_eq!(lease_count(&world), 0);
    assert!(world.dy_links().is_empty(), "left: {:?}", world.dy_links());
}

#[test]
fn gc_removes_what_the_runtime_no_longer_lists_and_status_says_whether_add_can_be_served() {
    let mut world = World::new("cni-gc");
    let kept_ns = world.container("kept");
    let gone_ns = world.container("gone");
    let config = world.config("1.1.0", json!({}));
    ok_json(&world.op("ADD", "kept", &kept_ns, "eth0", &config));
    let kept_link = world.dy_links();
    ok_json(&world.op("ADD", "gone", &gone_ns, "eth0", &config));
    assert_eq!(world.dy_links().len(), 2);
    assert_eq!(lease_count(&world), 2);

    // STATUS (1.1.0, nothing but the configuration): ready.
    let status = world.call(&[("CNI_COMMAND", "STATUS")], config.to_string().as_bytes());
    assert!(status.status.success(), "{status:?}");
    assert!(status.stdout.is_empty(), "{status:?}");

    // GC keeps the listed attachment, removes the other (link and lease).
    let gc_config = world.config(
        "1.1.0",
        json!({"cni.dev/valid-attachments": [{"containerID": "kept", "ifname": "eth0"}]}),
    );
    let gc = world.call(&[("CNI_COMMAND", "GC")], gc_config.to_string().as_bytes());
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(lease_count(&world), 1);
    assert_eq!(world.dy_links(), kept_link);
    // The older key works too; listing everything removes nothing.
    let keep_all = world.config(
        "1.1.0",
        json!({"cni.dev/attachments": [{"containerID": "kept", "ifname": "eth0"}]}),
    );
    let gc = world.call(&[("CNI_COMMAND", "GC")], keep_all.to_string().as_bytes());
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(lease_count(&world), 1);

    // GC and STATUS are 1.1.0's: an older configuration is an incompatible version.
    let old = world.config("1.0.0", json!({"cni.dev/valid-attachments": []}));
    assert_eq!(
        error_code(&world.call(&[("CNI_COMMAND", "GC")], old.to_string().as_bytes())),
        1
    );

    // An empty list: everything goes.
    let none = world.config("1.1.0", json!({"cni.dev/valid-attachments": []}));
    let gc = world.call(&[("CNI_COMMAND", "GC")], none.to_string().as_bytes());
    assert!(gc.status.success(), "{gc:?}");
    assert_eq!(lease_count(&world), 0);
    assert!(world.dy_links().is_empty());

    // A pool with no free address: STATUS says ADD cannot be served (50).
    let tiny = world.config("1.1.0", json!({"subnet": "10.215.1.0/30"}));
    let mut filled = 0;
    for i in 0..4 {
        let ns = world.container(&format!("t{i}"));
        if world
            .op("ADD", &format!("t{i}"), &ns, "eth0", &tiny)
            .status
            .success()
        {
            filled += 1;
        }
    }
    assert!(filled >= 1);
    let status = world.call(&[("CNI_COMMAND", "STATUS")], tiny.to_string().as_bytes());
    assert_eq!(error_code(&status), 50);
    let none = world.config(
        "1.1.0",
        json!({"subnet": "10.215.1.0/30", "cni.dev/valid-attachments": []}),
    );
    let gc = world.call(&[("CNI_COMMAND", "GC")], none.to_string().as_bytes());
    assert!(gc.status.success(), "{gc:?}");
    assert!(world.dy_links().is_empty());
}
