//! `dyno-cni` called as a runtime calls it, inside a lab "host" namespace, on container
//! namespaces this test makes and binds under its own scratch dir. Needs root.

mod common;

use std::net::Ipv4Addr;

use common::{error_code, lease_count, ok_json, World};
use dyno_net::ns::Netns;
use serde_json::{json, Value};

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

/// `$PORT` as each runtime names it: `CNI_ARGS` `DYNO_PORT` (Nomad's and scripts' per-call
/// arguments), the pod's `dyno/port` annotation (containerd's CRI), a `portMappings` container
/// port (podman's `-p`), the config's `port`; a bad one fails the ADD and makes nothing.
#[test]
fn port_from_args_annotation_mappings_or_config() {
    let mut world = World::new("cni-ports");
    let config = world.config(
        "1.0.0",
        json!({"port": 80, "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 5000, "protocol": "tcp"}],
            "io.kubernetes.cri.pod-annotations": {"dyno/port": "7000"}}}),
    );
    let cases = [
        (
            "args",
            config.clone(),
            Some("IgnoreUnknown=1;DYNO_PORT=6000"),
            6000,
        ),
        ("annotation", config.clone(), None, 7000),
        (
            "mappings",
            world.config(
                "1.0.0",
                json!({"port": 80, "runtimeConfig": {
            "portMappings": [{"hostPort": 8080, "containerPort": 5000, "protocol": "tcp"}]}}),
            ),
            None,
            5000,
        ),
        (
            "config",
            world.config("1.0.0", json!({"port": 80})),
            None,
            80,
        ),
    ];
    for (id, config, args, port) in cases {
        let netns = world.container(id);
        let mut env = vec![
            ("CNI_COMMAND", "ADD"),
            ("CNI_CONTAINERID", id),
            ("CNI_NETNS", netns.as_str()),
            ("CNI_IFNAME", "eth0"),
        ];
        env.extend(args.map(|a| ("CNI_ARGS", a)));
        let result = ok_json(&world.call(&env, config.to_string().as_bytes()));
        let address = result["ips"][0]["address"].as_str().expect("address");
        let ip: Ipv4Addr = address.trim_end_matches("/32").parse().expect("ip");
        assert_eq!(world.exposed(), vec![(ip, port)], "{id}");
        assert!(world
            .op("DEL", id, &netns, "eth0", &config)
            .status
            .success());
    }
    let netns = world.container("bad");
    let bad = world.config(
        "1.0.0",
        json!({"runtimeConfig": {"io.kubernetes.cri.pod-annotations": {"dyno/port": "0"}}}),
    );
    assert_eq!(error_code(&world.op("ADD", "bad", &netns, "eth0", &bad)), 7);
    assert_eq!(lease_count(&world), 0);
    assert!(world.dy_links().is_empty());
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

/// 50 ADDs at once on a fresh host (every one of them finds no table and installs it), then 50
/// DELs at once while 25 more containers are added: distinct addresses, every `$PORT` in the
/// set, and nothing of a deleted container left.
#[test]
fn concurrent_adds_and_dels_and_leases_survive() {
    const FIRST: usize = 50;
    const MORE: usize = 25;
    let mut world = World::new("cni-many");
    let config = world.config("1.0.0", json!({"port": 5000}));
    let netns: Vec<String> = (0..FIRST + MORE)
        .map(|i| world.container(&format!("m{i}")))
        .collect();
    let add = |i: usize| -> Ipv4Addr {
        let result = ok_json(&world.op("ADD", &format!("m{i}"), &netns[i], "eth0", &config));
        let address = result["ips"][0]["address"].as_str().expect("address");
        address.trim_end_matches("/32").parse().expect("an address")
    };
    let first = std::thread::scope(|s| add_concurrently(s, 0..FIRST, add));
    // Every ADD was a separate process: the leases on disk are what they share, and the
    // concurrent installs of the table kept every port exposed before them.
    assert_live(&world, &first, 5000);

    // DELs of the first 50 and ADDs of 25 more, all at once.
    let more = std::thread::scope(|s| {
        for i in 0..FIRST {
            let world = &world;
            let config = &config;
            let netns = &netns;
            s.spawn(move || {
                let out = world.op("DEL", &format!("m{i}"), &netns[i], "eth0", config);
                assert!(
                    out.status.success(),
                    "{}",
                    String::from_utf8_lossy(&out.stdout)
                );
            });
        }
        add_concurrently(s, FIRST..FIRST + MORE, add)
    });
    assert_live(&world, &more, 5000);
    assert_eq!(world.dy_links().len(), MORE);

    for (i, path) in netns.iter().enumerate().skip(FIRST) {
        let out = world.op("DEL", &format!("m{i}"), path, "eth0", &config);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    assert_eq!(lease_count(&world), 0);
    assert!(world.exposed().is_empty());
    assert!(world.dy_links().is_empty(), "left: {:?}", world.dy_links());
}

/// Runs `add(i)` for each `i` of `range` in a thread of `scope` and returns the results in
/// order.
fn add_concurrently<'scope, 'env, F>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    range: std::ops::Range<usize>,
    add: F,
) -> Vec<Ipv4Addr>
where
    F: Fn(usize) -> Ipv4Addr + Copy + Send + 'scope,
{
    let handles: Vec<_> = range.map(|i| scope.spawn(move || add(i))).collect();
    handles
        .into_iter()
        .map(|h| h.join().expect("thread"))
        .collect()
}

/// `addresses` are distinct, each holds a lease, and the exposed set is exactly their `port`.
fn assert_live(world: &World, addresses: &[Ipv4Addr], port: u16) {
    let mut distinct = addresses.to_vec();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        addresses.len(),
        "distinct addresses: {addresses:?}"
    );
    assert_eq!(lease_count(world), addresses.len());
    let mut exposed = world.exposed();
    exposed.sort();
    let wanted: Vec<(Ipv4Addr, u16)> = distinct.iter().map(|ip| (*ip, port)).collect();
    assert_eq!(exposed, wanted, "only the live containers' ports");
}

/// A call that cannot take the lease lock in `lockTimeoutSeconds` tells the runtime to try
/// again (11) and makes nothing; leases that cannot be read make STATUS say that neither ADD
/// nor DEL can be served (51).
#[test]
fn a_held_lock_is_try_again_and_unreadable_leases_are_unavailable() {
    let mut world = World::new("cni-lock");
    let netns = world.container("a");
    let config = world.config("1.0.0", json!({"lockTimeoutSeconds": 1}));
    let data = world.dir.join("data");
    std::fs::create_dir_all(&data).expect("data dir");
    let lock = std::fs::File::create(data.join("lock")).expect("lock file");
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).expect("flock");
    let out = world.op("ADD", "a", &netns, "eth0", &config);
    assert_eq!(error_code(&out), 11);
    let error: Value = serde_json::from_slice(&out.stdout).expect("error JSON");
    assert!(
        error["details"]
            .as_str()
            .is_some_and(|d| d.contains("lockTimeoutSeconds")),
        "{error}"
    );
    assert!(world.dy_links().is_empty());
    drop(lock);
    ok_json(&world.op("ADD", "a", &netns, "eth0", &config));
    assert!(world
        .op("DEL", "a", &netns, "eth0", &config)
        .status
        .success());

    // A data dir that cannot be one (a file is in its way).
    let blocked = world.dir.join("not-a-dir");
    std::fs::write(&blocked, b"").expect("file");
    let status_config = world.config(
        "1.1.0",
        json!({"dataDir": blocked.join("data").to_string_lossy()}),
    );
    let status = world.call(
        &[("CNI_COMMAND", "STATUS")],
        status_config.to_string().as_bytes(),
    );
    assert_eq!(error_code(&status), 51);
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
