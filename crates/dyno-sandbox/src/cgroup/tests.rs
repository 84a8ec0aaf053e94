//! Detection and limit writing over fake trees in temp dirs: sample `/proc/self` texts and
//! cgroup directories holding the files the kernel would have made.

use std::io;
use std::path::PathBuf;

use super::*;

/// A temp dir standing for `/`, removed on drop.
struct FakeTree {
    root: PathBuf,
}

impl FakeTree {
    fn new(test: &str) -> FakeTree {
        let root =
            std::env::temp_dir().join(format!("dyno-cgroup-unit-{}-{test}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("proc/self")).unwrap();
        FakeTree { root }
    }

    fn with_proc_self(self, mountinfo: &str, cgroup: &str) -> FakeTree {
        std::fs::write(self.root.join("proc/self/mountinfo"), mountinfo).unwrap();
        std::fs::write(self.root.join("proc/self/cgroup"), cgroup).unwrap();
        self
    }

    fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative.trim_start_matches('/'))
    }

    /// A cgroup directory as the kernel makes it: `cgroup.procs` and the given files.
    fn cgroup(&self, relative: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = self.path(relative);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("cgroup.procs"), "").unwrap();
        for (name, content) in files {
            std::fs::write(dir.join(name), content).unwrap();
        }
        dir
    }

    fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.path(relative)).unwrap()
    }

    fn detect(&self) -> Result<Cgroups, CgroupError> {
        Cgroups::detect_at(&self.root.join("proc/self"), &self.root)
    }
}

impl Drop for FakeTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// This machine's (`grep cgroup /proc/self/mountinfo`, `cat /proc/self/cgroup`): v1 with every
/// controller on its own, our memory cgroup below the root, an empty v2 mount beside them.
const V1_MOUNTINFO: &str = "\
22 1 253:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const V1_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
7:blkio:/
6:freezer:/
5:devices:/
4:memory:/process_api/167c75
3:cpuset:/
2:cpuacct:/
1:cpu:/
0::/
";

/// A systemd "hybrid" host: co-mounted `cpu,cpuacct`, optional fields, an empty unified mount.
const HYBRID_MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 24 0:26 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:4 - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:5 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw,nosuid,nodev,noexec,relatime shared:6 - cgroup cgroup rw,xattr,name=systemd
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:10 - cgroup cgroup rw,memory
37 30 0:33 / /sys/fs/cgroup/pids rw,nosuid,nodev,noexec,relatime shared:11 - cgroup cgroup rw,pids
";
const HYBRID_CGROUP: &str = "\
11:pids:/system.slice/dyno.service
4:memory:/system.slice/dyno.service
3:cpu,cpuacct:/system.slice/dyno.service
1:name=systemd:/system.slice/dyno.service
0::/system.slice/dyno.service
";

/// A pure v2 host (systemd, nsdelegate).
const V2_MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
29 24 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";
const V2_CONTROLLERS: &str = "cpuset cpu io memory hugetlb pids rdma misc\n";
const V2_SERVICE: &str = "sys/fs/cgroup/system.slice/dyno.service";

const V1_MEMORY_STAT: &str = "\
cache 73728
rss 1630208
rss_huge 0
shmem 0
swap 0
total_cache 20971520
total_rss 157286400
total_rss_huge 2097152
total_shmem 4194304
total_mapped_file 0
total_swap 0
total_pgpgin 348836
total_pgpgout 343403
";
const V1_OOM_CONTROL: &str = "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n";
const V1_UNLIMITED: &str = "9223372036854771712\n";

const MIB: u64 = 1024 * 1024;

fn small_size() -> DynoSize {
    DynoSize {
        name: "test-128",
        memory_mb: 128,
        pids: 16,
        cpu_weight: 50,
    }
}

/// The v1 tree of this machine with a dyno cgroup `web-1` already made (as if by the kernel on
/// our mkdir, which a plain directory cannot imitate).
fn v1_tree(test: &str) -> FakeTree {
    let tree = FakeTree::new(test).with_proc_self(V1_MOUNTINFO, V1_CGROUP);
    let memory = "sys/fs/cgroup/memory/process_api/167c75";
    tree.cgroup(memory, &[]);
    tree.cgroup(&format!("{memory}/dyno"), &[]);
    tree.cgroup(
        &format!("{memory}/dyno/web-1"),
        &[
            ("memory.limit_in_bytes", V1_UNLIMITED),
            ("memory.memsw.limit_in_bytes", V1_UNLIMITED),
            ("memory.stat", V1_MEMORY_STAT),
            ("memory.oom_control", V1_OOM_CONTROL),
        ],
    );
    for (hierarchy, file, default) in [
        ("pids", "pids.max", "max\n"),
        ("cpu", "cpu.shares", "1024\n"),
    ] {
        tree.cgroup(&format!("sys/fs/cgroup/{hierarchy}"), &[]);
        tree.cgroup(&format!("sys/fs/cgroup/{hierarchy}/dyno"), &[]);
        tree.cgroup(
            &format!("sys/fs/cgroup/{hierarchy}/dyno/web-1"),
            &[(file, default)],
        );
    }
    tree
}

fn v2_tree(test: &str, cgroup: &str) -> FakeTree {
    let tree = FakeTree::new(test).with_proc_self(V2_MOUNTINFO, cgroup);
    let own_files = [
        ("cgroup.controllers", V2_CONTROLLERS),
        ("cgroup.subtree_control", ""),
    ];
    tree.cgroup(V2_SERVICE, &own_files);
    tree.cgroup(&format!("{V2_SERVICE}/dyno"), &own_files);
    tree.cgroup(
        &format!("{V2_SERVICE}/dyno/web-1"),
        &[
            ("cgroup.controllers", "cpu memory pids\n"),
            ("cgroup.kill", ""),
            ("memory.max", "max\n"),
            ("memory.swap.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("pids.max", "max\n"),
            ("cpu.weight", "100\n"),
            (
                "memory.stat",
                "anon 157286400\nfile 20971520\nkernel 1000\nshmem 4194304\n",
            ),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 7\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
        ],
    );
    tree
}

#[test]
fn detects_this_machines_v1_layout() {
    let tree = v1_tree("detect-v1");
    let cgroups = tree.detect().unwrap();
    assert_eq!(cgroups.version(), Version::V1);
    assert_eq!(
        cgroups.own_dirs(),
        vec![
            tree.path("sys/fs/cgroup/memory/process_api/167c75"),
            tree.path("sys/fs/cgroup/pids"),
            tree.path("sys/fs/cgroup/cpu"),
        ]
    );
    assert_eq!(
        cgroups.dyno_root_dirs()[0],
        tree.path("sys/fs/cgroup/memory/process_api/167c75/dyno")
    );
    assert_eq!(cgroups.dyno_ids().unwrap(), vec!["web-1".to_string()]);
}

#[test]
fn detects_a_hybrid_host_with_comounted_cpu_as_v1() {
    let tree = FakeTree::new("detect-hybrid").with_proc_self(HYBRID_MOUNTINFO, HYBRID_CGROUP);
    let cgroups = tree.detect().unwrap();
    assert_eq!(cgroups.version(), Version::V1);
    assert_eq!(
        cgroups.own_dirs(),
        vec![
            tree.path("sys/fs/cgroup/memory/system.slice/dyno.service"),
            tree.path("sys/fs/cgroup/pids/system.slice/dyno.service"),
            tree.path("sys/fs/cgroup/cpu,cpuacct/system.slice/dyno.service"),
        ]
    );
    assert_eq!(cgroups.own[2].controllers, "cpu,cpuacct");
    assert_eq!(cgroups.own[2].proc_path, "/system.slice/dyno.service");
}

#[test]
fn detects_v1_bind_mounted_by_a_container_runtime() {
    let mountinfo = "\
40 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory
41 31 0:36 /docker/abc /sys/fs/cgroup/pids ro,nosuid - cgroup cgroup rw,pids
42 31 0:29 /docker/abc /sys/fs/cgroup/cpu,cpuacct ro,nosuid - cgroup cgroup rw,cpu,cpuacct
";
    let cgroup = "8:pids:/docker/abc\n4:memory:/docker/abc/inner\n2:cpu,cpuacct:/docker/abc\n";
    let tree = FakeTree::new("detect-docker").with_proc_self(mountinfo, cgroup);
    let cgroups = tree.detect().unwrap();
    assert_eq!(
        cgroups.own_dirs(),
        vec![
            tree.path("sys/fs/cgroup/memory/inner"),
            tree.path("sys/fs/cgroup/pids"),
            tree.path("sys/fs/cgroup/cpu,cpuacct"),
        ]
    );
    // The cgroup is outside what the mount shows.
    let tree = FakeTree::new("detect-docker-hidden").with_proc_self(
        mountinfo,
        "8:pids:/elsewhere\n4:memory:/docker/abc\n2:cpu,cpuacct:/docker/abc\n",
    );
    let err = tree.detect().unwrap_err().to_string();
    assert!(
        err.contains("\"/elsewhere\"") && err.contains("/sys/fs/cgroup/pids"),
        "{err}"
    );
}

#[test]
fn v1_without_a_needed_controller_says_which() {
    let cgroup = "4:memory:/\n2:cpu:/\n0::/\n";
    let tree = FakeTree::new("detect-v1-no-pids").with_proc_self(V1_MOUNTINFO, cgroup);
    let err = tree.detect().unwrap_err().to_string();
    assert!(err.contains("\"pids\""), "{err}");
    // Listed in /proc/self/cgroup but not mounted here.
    let mountinfo: String = V1_MOUNTINFO
        .lines()
        .filter(|l| !l.contains("rw,pids"))
        .map(|l| format!("{l}\n"))
        .collect();
    let tree = FakeTree::new("detect-v1-unmounted").with_proc_self(&mountinfo, V1_CGROUP);
    let err = tree.detect().unwrap_err().to_string();
    assert!(
        err.contains("\"pids\"") && err.contains("not mounted"),
        "{err}"
    );
}

#[test]
fn detects_pure_v2() {
    let tree = v2_tree("detect-v2", "0::/system.slice/dyno.service\n");
    let cgroups = tree.detect().unwrap();
    assert_eq!(cgroups.version(), Version::V2);
    assert_eq!(cgroups.own_dirs(), vec![tree.path(V2_SERVICE)]);
    assert_eq!(
        cgroups.dyno_root_dirs(),
        vec![tree.path(&format!("{V2_SERVICE}/dyno"))]
    );
}

#[test]
fn v2_takes_the_parent_of_the_supervisor_leaf() {
    let tree = v2_tree(
        "detect-v2-leaf",
        "0::/system.slice/dyno.service/dyno-supervisor\n",
    );
    let cgroups = tree.detect().unwrap();
    assert_eq!(cgroups.own_dirs(), vec![tree.path(V2_SERVICE)]);
    assert_eq!(cgroups.own[0].proc_path, "/system.slice/dyno.service");
}

#[test]
fn v2_in_a_cgroup_namespace_uses_the_mount_itself() {
    let tree = FakeTree::new("detect-v2-ns").with_proc_self(V2_MOUNTINFO, "0::/\n");
    tree.cgroup("sys/fs/cgroup", &[("cgroup.controllers", V2_CONTROLLERS)]);
    let cgroups = tree.detect().unwrap();
    assert_eq!(cgroups.own_dirs(), vec![tree.path("sys/fs/cgroup")]);
}

#[test]
fn v2_without_delegated_controllers_says_which() {
    let tree = v2_tree("detect-v2-undelegated", "0::/system.slice/dyno.service\n");
    std::fs::write(
        tree.path(&format!("{V2_SERVICE}/cgroup.controllers")),
        "cpu io\n",
    )
    .unwrap();
    let err = tree.detect().unwrap_err();
    match &err {
        CgroupError::ControllersUnavailable { missing, .. } => {
            assert_eq!(missing, &["memory".to_string(), "pids".to_string()]);
        }
        other => panic!("{other}"),
    }
    assert!(err.to_string().contains("cgroup.controllers"), "{err}");
}

#[test]
fn no_cgroup_filesystem_at_all() {
    let mountinfo = "22 1 253:0 / / rw,relatime - ext4 /dev/vda rw\n";
    let tree = FakeTree::new("detect-none").with_proc_self(mountinfo, "0::/\n");
    let err = tree.detect().unwrap_err();
    assert!(matches!(err, CgroupError::NoCgroupFs { .. }), "{err}");
    assert!(err.to_string().contains("mountinfo"), "{err}");
}

#[test]
fn v1_create_writes_twice_the_quota_pids_and_shares() {
    let tree = v1_tree("create-v1");
    let cgroups = tree.detect().unwrap();
    let dyno = cgroups.create("web-1", &DynoSize::STANDARD_1X).unwrap();
    let memory = "sys/fs/cgroup/memory/process_api/167c75/dyno/web-1";
    assert_eq!(
        tree.read(&format!("{memory}/memory.limit_in_bytes")),
        "1073741824"
    );
    assert_eq!(
        tree.read(&format!("{memory}/memory.memsw.limit_in_bytes")),
        "1073741824"
    );
    assert_eq!(tree.read("sys/fs/cgroup/pids/dyno/web-1/pids.max"), "256");
    assert_eq!(tree.read("sys/fs/cgroup/cpu/dyno/web-1/cpu.shares"), "1024");
    assert_eq!(
        dyno.paths(),
        vec![
            tree.path(memory),
            tree.path("sys/fs/cgroup/pids/dyno/web-1"),
            tree.path("sys/fs/cgroup/cpu/dyno/web-1"),
        ]
    );
    assert_eq!(dyno.quota_bytes(), 512 * MIB);

    // Again, resized: still fine, new values.
    let size = DynoSize::lookup("standard-2x").unwrap();
    cgroups.create("web-1", size).unwrap();
    assert_eq!(
        tree.read(&format!("{memory}/memory.limit_in_bytes")),
        "2147483648"
    );
    assert_eq!(
        tree.read(&format!("{memory}/memory.memsw.limit_in_bytes")),
        "2147483648"
    );
    assert_eq!(tree.read("sys/fs/cgroup/pids/dyno/web-1/pids.max"), "512");
    assert_eq!(tree.read("sys/fs/cgroup/cpu/dyno/web-1/cpu.shares"), "2048");
}

/// A sandbox is started with the planned handle while the daemon makes the cgroup: both must
/// name the same directories, on v1 and v2. (The fake trees hold `web-1` already, as the
/// kernel's files must be there: `create`, not `create_new`.)
#[test]
fn the_planned_cgroup_is_the_one_created() {
    for (tree, size) in [
        (v1_tree("planned-v1"), DynoSize::STANDARD_1X),
        (
            v2_tree("planned-v2", "0::/system.slice/dyno.service\n"),
            small_size(),
        ),
    ] {
        let cgroups = tree.detect().unwrap();
        let planned = cgroups.planned("web-1", &size).unwrap();
        let made = cgroups.create("web-1", &size).unwrap();
        assert_eq!(planned.paths(), made.paths());
        assert_eq!(planned.view_paths(), made.view_paths());
        assert_eq!(planned.quota_bytes(), made.quota_bytes());
        assert_eq!(planned.version(), made.version());
        assert!(cgroups.planned("../x", &size).is_err(), "a bad name");
    }
}

#[test]
fn v1_without_swap_accounting_sets_only_the_memory_limit() {
    let tree = v1_tree("create-v1-no-memsw");
    let memory = "sys/fs/cgroup/memory/process_api/167c75/dyno/web-1";
    std::fs::remove_file(tree.path(&format!("{memory}/memory.memsw.limit_in_bytes"))).unwrap();
    tree.detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    assert_eq!(
        tree.read(&format!("{memory}/memory.limit_in_bytes")),
        "268435456"
    );
    assert!(!tree
        .path(&format!("{memory}/memory.memsw.limit_in_bytes"))
        .exists());
    assert_eq!(tree.read("sys/fs/cgroup/cpu/dyno/web-1/cpu.shares"), "512");
}

#[test]
fn v1_readings_come_from_memory_stat_and_oom_control() {
    let tree = v1_tree("usage-v1");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    let usage = dyno.memory_usage().unwrap();
    assert_eq!(
        usage,
        MemoryUsage {
            used_bytes: 157_286_400 + 4_194_304,
            quota_bytes: 128 * MIB,
            limit_bytes: 256 * MIB,
            oom_kills: 2,
            rss_bytes: 157_286_400,
            cache_bytes: 20_971_520,
            swap_bytes: 0,
            pgpgin_pages: Some(348_836),
            pgpgout_pages: Some(343_403),
        }
    );
    assert!(usage.over_quota());
    assert!(!usage.at_limit());
}

#[test]
fn v1_pids_are_collected_from_every_hierarchy_and_nested_cgroups() {
    let tree = v1_tree("pids-v1");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    let memory = "sys/fs/cgroup/memory/process_api/167c75/dyno/web-1";
    std::fs::write(tree.path(&format!("{memory}/cgroup.procs")), "30\n12\n").unwrap();
    tree.cgroup(&format!("{memory}/inner"), &[]);
    std::fs::write(tree.path(&format!("{memory}/inner/cgroup.procs")), "41\n").unwrap();
    std::fs::write(
        tree.path("sys/fs/cgroup/pids/dyno/web-1/cgroup.procs"),
        "12\n30\n",
    )
    .unwrap();
    assert_eq!(dyno.pids().unwrap(), vec![12, 30, 41]);
    std::fs::write(
        tree.path(&format!("{memory}/cgroup.procs")),
        "12\nnot-a-pid\n",
    )
    .unwrap();
    let err = dyno.pids().unwrap_err().to_string();
    assert!(
        err.contains("cgroup.procs") && err.contains("not-a-pid"),
        "{err}"
    );
}

#[test]
fn v1_join_writes_every_hierarchy() {
    let tree = v1_tree("join-v1");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    dyno.join(4242).unwrap();
    for dir in dyno.paths() {
        assert_eq!(
            std::fs::read_to_string(dir.join("cgroup.procs")).unwrap(),
            "4242"
        );
    }
}

#[test]
fn create_refuses_a_directory_the_kernel_did_not_make() {
    let tree = FakeTree::new("create-not-cgroup").with_proc_self(V1_MOUNTINFO, V1_CGROUP);
    tree.cgroup("sys/fs/cgroup/memory/process_api/167c75", &[]);
    let err = tree
        .detect()
        .unwrap()
        .create("web-2", &small_size())
        .unwrap_err();
    assert!(matches!(err, CgroupError::NotACgroup { .. }), "{err}");
    assert!(err.to_string().contains("167c75/dyno"), "{err}");
}

#[test]
fn v2_create_enables_controllers_and_writes_limits() {
    let tree = v2_tree("create-v2", "0::/system.slice/dyno.service\n");
    let cgroups = tree.detect().unwrap();
    let dyno = cgroups.create("web-1", &small_size()).unwrap();
    assert_eq!(dyno.version(), Version::V2);
    assert_eq!(
        tree.read(&format!("{V2_SERVICE}/cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    assert_eq!(
        tree.read(&format!("{V2_SERVICE}/dyno/cgroup.subtree_control")),
        "+memory +pids +cpu"
    );
    let dir = format!("{V2_SERVICE}/dyno/web-1");
    assert_eq!(tree.read(&format!("{dir}/memory.max")), "268435456");
    assert_eq!(tree.read(&format!("{dir}/memory.swap.max")), "0");
    assert_eq!(tree.read(&format!("{dir}/pids.max")), "16");
    assert_eq!(tree.read(&format!("{dir}/cpu.weight")), "50");
    assert_eq!(dyno.paths(), vec![tree.path(&dir)]);
}

#[test]
fn v2_leaves_enabled_controllers_alone() {
    let tree = v2_tree("create-v2-enabled", "0::/system.slice/dyno.service\n");
    let own = format!("{V2_SERVICE}/cgroup.subtree_control");
    // As the kernel shows them: no '+', other controllers too.
    std::fs::write(tree.path(&own), "cpu io memory pids\n").unwrap();
    tree.detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    assert_eq!(tree.read(&own), "cpu io memory pids\n");
    // Only what is missing is asked for.
    std::fs::write(tree.path(&own), "cpu io\n").unwrap();
    tree.detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    assert_eq!(tree.read(&own), "+memory +pids");
}

#[test]
fn v2_without_swap_accounting_skips_swap_max() {
    let tree = v2_tree("create-v2-no-swap", "0::/system.slice/dyno.service\n");
    let dir = format!("{V2_SERVICE}/dyno/web-1");
    std::fs::remove_file(tree.path(&format!("{dir}/memory.swap.max"))).unwrap();
    std::fs::remove_file(tree.path(&format!("{dir}/memory.swap.current"))).unwrap();
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    assert!(!tree.path(&format!("{dir}/memory.swap.max")).exists());
    assert_eq!(dyno.memory_usage().unwrap().swap_bytes, 0);
}

#[test]
fn v2_readings_come_from_memory_stat_and_events() {
    let tree = v2_tree("usage-v2", "0::/system.slice/dyno.service\n");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    let dir = format!("{V2_SERVICE}/dyno/web-1");
    std::fs::write(
        tree.path(&format!("{dir}/memory.swap.current")),
        "1048576\n",
    )
    .unwrap();
    let usage = dyno.memory_usage().unwrap();
    assert_eq!(
        usage,
        MemoryUsage {
            used_bytes: 157_286_400 + 4_194_304 + MIB,
            quota_bytes: 128 * MIB,
            limit_bytes: 256 * MIB,
            oom_kills: 1,
            rss_bytes: 157_286_400,
            cache_bytes: 20_971_520,
            swap_bytes: MIB,
            pgpgin_pages: None,
            pgpgout_pages: None,
        }
    );
    std::fs::write(tree.path(&format!("{dir}/memory.stat")), "file 1\n").unwrap();
    let err = dyno.memory_usage().unwrap_err().to_string();
    assert!(err.contains("memory.stat") && err.contains("anon"), "{err}");
}

#[test]
fn v2_kill_all_uses_cgroup_kill() {
    let tree = v2_tree("kill-v2", "0::/system.slice/dyno.service\n");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    dyno.kill_all().unwrap();
    assert_eq!(
        tree.read(&format!("{V2_SERVICE}/dyno/web-1/cgroup.kill")),
        "1"
    );
}

#[test]
fn v2_vacate_moves_us_into_the_supervisor_leaf() {
    let tree = v2_tree("vacate-v2", "0::/system.slice/dyno.service\n");
    // The leaf as the kernel would make it on our mkdir.
    tree.cgroup(&format!("{V2_SERVICE}/{SUPERVISOR_LEAF}"), &[]);
    tree.detect().unwrap().vacate_own_cgroup().unwrap();
    assert_eq!(
        tree.read(&format!("{V2_SERVICE}/{SUPERVISOR_LEAF}/cgroup.procs")),
        "0"
    );
}

#[test]
fn the_hint_for_a_busy_cgroup_names_the_way_out() {
    let hint = error::enable_hint(&io::Error::from_raw_os_error(libc::EBUSY));
    assert!(hint.contains("dyno-supervisor"), "{hint}");
    assert_eq!(
        error::enable_hint(&io::Error::from_raw_os_error(libc::EIO)),
        ""
    );
}

#[test]
fn dyno_cgroups_round_trip_through_json() {
    let tree = v1_tree("serde");
    let dyno = tree
        .detect()
        .unwrap()
        .create("web-1", &small_size())
        .unwrap();
    let json = serde_json::to_string(&dyno).unwrap();
    let back: DynoCgroup = serde_json::from_str(&json).unwrap();
    assert_eq!(back, dyno);
}

#[test]
fn dyno_ids_are_validated() {
    for good in [
        "web-1",
        "run.4821",
        "a",
        "0",
        &"x".repeat(64),
        "4f1c9e2a-web.1",
    ] {
        validate_dyno_id(good).unwrap();
    }
    for bad in [
        "",
        ".",
        "..",
        ".hidden",
        "Web-1",
        "web/1",
        "../x",
        "web_1",
        "web 1",
        "wéb",
        &"x".repeat(65),
    ] {
        let err = validate_dyno_id(bad).unwrap_err();
        assert!(
            matches!(err, CgroupError::InvalidId { .. }),
            "{bad:?}: {err}"
        );
    }
    let tree = v1_tree("invalid-id");
    let err = tree
        .detect()
        .unwrap()
        .create("../escape", &small_size())
        .unwrap_err();
    assert!(err.to_string().contains("../escape"), "{err}");
    assert!(!tree
        .path("sys/fs/cgroup/memory/process_api/escape")
        .exists());
}

#[test]
fn create_refuses_an_invalid_size() {
    let tree = v1_tree("invalid-size");
    let size = DynoSize {
        pids: 0,
        ..small_size()
    };
    let err = tree.detect().unwrap().create("web-1", &size).unwrap_err();
    assert!(matches!(err, CgroupError::InvalidSize { .. }), "{err}");
}
