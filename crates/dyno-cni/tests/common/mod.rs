//! What the plugin tests share: a lab "host" namespace, container namespaces bound under a
//! scratch dir of the test's own, and `dyno-cni` called in the lab host as a runtime calls it.
#![allow(dead_code)] // each test file uses its own part

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

pub fn require_root() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "dyno-cni's plugin tests need root (network namespaces, nf_tables)"
    );
}

/// A lab host, a scratch dir with a `netns` dir for containers and a `data` dir for leases.
pub struct World {
    pub lab: Lab,
    pub dir: PathBuf,
    containers: Vec<PathBuf>,
}

impl World {
    pub fn new(tag: &str) -> World {
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
    pub fn container(&mut self, name: &str) -> String {
        let (netns, ()) = Netns::create(|| ()).expect("container netns");
        let path = self.dir.join("netns").join(name);
        netns.bind(&path).expect("bind container netns");
        self.containers.push(path.clone());
        path.to_string_lossy().into_owned()
    }

    pub fn config(&self, version: &str, extra: Value) -> Value {
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

    pub fn call(&self, env: &[(&str, &str)], stdin: &[u8]) -> Output {
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

    pub fn op(&self, command: &str, id: &str, netns: &str, ifname: &str, config: &Value) -> Output {
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

    pub fn leases(&self) -> Value {
        let path = self.dir.join("data").join("leases.json");
        std::fs::read(path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or(json!({}))
    }

    pub fn exposed(&self) -> Vec<(Ipv4Addr, u16)> {
        exposed(&self.lab)
    }

    pub fn dy_links(&mut self) -> Vec<String> {
        dy_links(&mut self.lab)
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

pub fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "plugin failed: stdout {} stderr {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON result")
}

pub fn error_code(out: &Output) -> u64 {
    assert!(!out.status.success(), "expected a failure");
    let v: Value = serde_json::from_slice(&out.stdout).expect("CNI error JSON on stdout");
    assert!(v["msg"].is_string() && v["details"].is_string() && v["cniVersion"].is_string());
    v["code"].as_u64().expect("code")
}

pub fn lease_count(world: &World) -> usize {
    world.leases()["leases"].as_object().map_or(0, |m| m.len())
}

/// The `exposed` set of the lab host's `inet dyno` table.
pub fn exposed(lab: &Lab) -> Vec<(Ipv4Addr, u16)> {
    lab.host
        .netns()
        .run(|| Firewall::open().and_then(|mut f| f.exposed()))
        .expect("netns")
        .expect("exposed set")
}

/// The lab host's `dy*` links: attachments' host ends.
pub fn dy_links(lab: &mut Lab) -> Vec<String> {
    lab.host
        .links_with_prefix("dy")
        .expect("links")
        .into_iter()
        .map(|(_, n)| n)
        .collect()
}
