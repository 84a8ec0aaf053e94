//! A read-only and a full data dir, for real: tmpfs mounts in a private mount namespace (see
//! `common::in_private_mount_ns`). Needs root; fails loudly without it.

mod common;

use std::ffi::CStr;
use std::io::Write;
use std::path::Path;

use common::{
    app, assert_id, check_committed, child_options, in_private_mount_ns, kv, new_dyno,
    require_root, TempDir, Writer, MAIN_APP,
};
use dyno_state::{ConfigKey, ConfigValue, Store};
use rustix::mount::{mount, mount_remount, MountFlags};

/// The writer child for the read-only test.
#[test]
fn crash_child() {
    common::crash_child_entry();
}

fn mount_tmpfs(at: &Path, options: &CStr) {
    mount("dyno-state-test", at, "tmpfs", MountFlags::empty(), options).expect("mount tmpfs");
}

fn remount(at: &Path, flags: MountFlags) {
    mount_remount(at, flags, "").unwrap_or_else(|e| panic!("remount {}: {e}", at.display()));
}

#[test]
fn a_read_only_data_dir_serves_reads_and_refuses_changes() {
    require_root("it mounts a tmpfs and remounts it read-only");
    let tmp = TempDir::new("ro");
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    in_private_mount_ns(|| {
        mount_tmpfs(&mnt, c"size=16m,mode=0700");
        let data = mnt.join("data");

        // A daemon commits changes and is killed: its -wal file still holds them.
        let mut writer = Writer::spawn(&data, 0);
        writer.wait_for_commits(25);
        let lines = writer.kill();
        let wal = std::fs::metadata(data.join("state.db-wal")).map(|m| m.len());
        assert!(
            wal.as_ref().is_ok_and(|len| *len > 0),
            "the killed writer should leave its WAL behind: {wal:?}"
        );

        // The filesystem turns read-only before the next start.
        remount(&mnt, MountFlags::RDONLY);
        let e = std::fs::write(mnt.join("probe"), b"x").unwrap_err();
        assert_eq!(
            e.raw_os_error(),
            Some(libc_erofs()),
            "the mount must be read-only"
        );

        let mut store = Store::open_with(&data, child_options()).expect("open read-only");
        assert!(store.is_read_only());
        let committed = check_committed(&store, &lines);
        assert!(committed >= 25, "{committed}");
        let before = store.dump().unwrap();

        let main = app(MAIN_APP);
        let e = assert_id(store.create_app(&app("new-app")), "read_only");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("the data dir {} is read-only", data.display()))
                && msg.contains("remount it read-write")
                && msg.contains("nothing was changed"),
            "{msg}"
        );
        assert_id(store.config_set(&main, &[kv("X", "1")]), "read_only");
        assert_id(store.set_maintenance(&main, true), "read_only");
        assert_id(
            store.insert_dyno(&new_dyno(&main, "web", 99, 2)),
            "read_only",
        );
        assert_id(store.lease_alloc("x"), "read_only");
        assert_id(store.destroy_app(&main), "read_only");
        assert_eq!(store.dump().unwrap(), before);
        drop(store);

        // A data dir that does not exist yet on a read-only filesystem: a clear refusal.
        assert_id(Store::open(mnt.join("elsewhere")), "read_only");

        // Back to read-write: everything committed is there and changes work again.
        remount(&mnt, MountFlags::empty());
        let mut store = Store::open_with(&data, child_options()).unwrap();
        assert!(!store.is_read_only());
        check_committed(&store, &lines);
        assert_eq!(store.dump().unwrap(), before);
        store.create_app(&app("new-app")).unwrap();
        store.integrity_check().unwrap();
        let after = store.dump().unwrap();

        // A clean stop removes the -wal and -shm files; read-only again, the store still opens.
        drop(store);
        assert!(
            !data.join("state.db-wal").exists(),
            "a clean close checkpoints the WAL"
        );
        remount(&mnt, MountFlags::RDONLY);
        let mut store = Store::open_with(&data, child_options()).expect("open read-only again");
        assert!(store.is_read_only());
        assert_eq!(store.dump().unwrap(), after);
        check_committed(&store, &lines);
        assert_id(store.create_app(&app("newer-app")), "read_only");
    });
}

#[test]
fn a_full_disk_refuses_changes_and_loses_nothing() {
    require_root("it mounts a small tmpfs");
    let tmp = TempDir::new("full");
    let mnt = tmp.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    in_private_mount_ns(|| {
        // Room for the schema (every migration) with some to spare once the ballast is in.
        mount_tmpfs(&mnt, c"size=384k,mode=0700");
        let data = mnt.join("data");
        let mut store = Store::open(&data).unwrap();
        let a = app("filler");
        store.create_app(&a).unwrap();
        common::deploy(&mut store, &a, &[("web", "./web")], "s");

        // Ballast we can delete later to free space.
        let ballast = mnt.join("ballast");
        write_until_full(&ballast, 64 * 1024);

        // Each config release snapshots all vars: the database grows until the disk is full.
        let value: ConfigValue = "v".repeat(512).parse().unwrap();
        let mut set = Vec::new();
        let mut refused = None;
        for i in 0..200 {
            let key: ConfigKey = format!("K{i}").parse().unwrap();
            let before = store.dump().unwrap();
            match store.config_set(&a, &[(key.clone(), value.clone())]) {
                Ok(_) => set.push(key),
                Err(e) => {
                    eprintln!("after {} config releases: {e:?}", set.len());
                    assert_eq!(e.kind().name(), "disk_full", "{e}");
                    assert!(e.to_string().contains("is full; free some space"), "{e}");
                    assert_eq!(
                        store.dump().unwrap(),
                        before,
                        "a refused change changed something"
                    );
                    refused = Some(key);
                    break;
                }
            }
        }
        let refused = refused.expect("the 384 KiB tmpfs never filled up");
        assert!(!set.is_empty(), "nothing fit before the disk was full");
        // Other changes are refused too, and reads work.
        assert_eq!(store.config(&a).unwrap().len(), set.len());
        store.integrity_check().unwrap();

        // Free space: the store works again on the same connection, and after a reopen.
        std::fs::remove_file(&ballast).unwrap();
        store.set_maintenance(&a, true).unwrap();
        store.config_set(&a, &[kv("AFTER", "1")]).unwrap();
        drop(store);
        let store = Store::open(&data).unwrap();
        store.integrity_check().unwrap();
        let config = store.config(&a).unwrap();
        for key in &set {
            assert!(config.contains_key(key.as_str()), "committed {key} lost");
        }
        assert!(
            !config.contains_key(refused.as_str()),
            "the refused change appeared"
        );
        assert!(config.contains_key("AFTER"));
        assert!(store.app(&a).unwrap().maintenance);
    });
}

/// Writes `path` until the filesystem is full or `max` bytes are written, whichever first.
fn write_until_full(path: &Path, max: usize) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = [0x55u8; 4096];
    let mut written = 0;
    while written < max {
        match f.write(&chunk) {
            Ok(n) => written += n,
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("ballast: {e}"),
        }
    }
}

fn libc_erofs() -> i32 {
    rustix::io::Errno::ROFS.raw_os_error()
}
