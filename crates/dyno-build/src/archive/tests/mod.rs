//! Archives built in memory, good and malicious, unpacked into a scratch directory that has
//! a sibling `outside/` the malicious ones aim at.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use tar::{EntryType, Header};

use super::*;

mod refused;

/// `<tmp>/dyno-build-archive-<test>-<pid>/` with `dest/` (empty), `outside/sentinel` and the
/// uploaded archive; removed on drop.
struct Scratch {
    base: PathBuf,
}

impl Scratch {
    fn new(test: &str) -> Scratch {
        let base =
            std::env::temp_dir().join(format!("dyno-build-archive-{test}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&base);
        fs::create_dir_all(base.join("dest")).unwrap();
        fs::create_dir_all(base.join("outside")).unwrap();
        fs::write(base.join("outside/sentinel"), "untouched").unwrap();
        Scratch { base }
    }

    fn dest(&self) -> PathBuf {
        self.base.join("dest")
    }

    fn outside(&self) -> PathBuf {
        self.base.join("outside")
    }

    fn unpack(&self, archive: &[u8]) -> Result<Unpacked, ArchiveError> {
        self.unpack_within(archive, Limits::with_max_bytes(1 << 30))
    }

    fn unpack_within(&self, archive: &[u8], limits: Limits) -> Result<Unpacked, ArchiveError> {
        let upload = self.base.join("upload");
        fs::write(&upload, archive).unwrap();
        unpack(&upload, &self.dest(), limits)
    }

    /// Nothing appeared next to `dest` and `outside` holds only its sentinel, unchanged.
    fn assert_outside_untouched(&self) {
        let mut names: Vec<_> = fs::read_dir(&self.base)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["dest", "outside", "upload"]);
        let inside: Vec<_> = fs::read_dir(self.outside())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(inside, ["sentinel"]);
        let meta = fs::symlink_metadata(self.outside().join("sentinel")).unwrap();
        assert!(meta.is_file());
        assert_eq!(meta.nlink(), 1, "the sentinel got a hard link");
        assert_eq!(
            fs::read_to_string(self.outside().join("sentinel")).unwrap(),
            "untouched"
        );
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // remove_dir_all never follows symlinks, so links the tests made are safe to leave.
        let _ = fs::remove_dir_all(&self.base);
    }
}

/// A tar written member by member, names and link targets as raw bytes (the tar crate's
/// own setters refuse `..` and absolute names, which is what these tests need to write).
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn raw(&mut self, ty: EntryType, name: &[u8], link: &[u8], mode: u32, data: &[u8]) {
        let mut h = Header::new_gnu();
        let old = h.as_old_mut();
        old.name[..name.len()].copy_from_slice(name);
        old.linkname[..link.len()].copy_from_slice(link);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_entry_type(ty);
        h.set_mtime(1_600_000_000);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
    }

    fn file(mut self, name: &str, mode: u32, data: &[u8]) -> Tar {
        self.raw(EntryType::Regular, name.as_bytes(), b"", mode, data);
        self
    }

    fn dir(mut self, name: &str, mode: u32) -> Tar {
        self.raw(EntryType::Directory, name.as_bytes(), b"", mode, b"");
        self
    }

    fn symlink(mut self, name: &str, target: &str) -> Tar {
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            target.as_bytes(),
            0o777,
            b"",
        );
        self
    }

    fn hard_link(mut self, name: &str, target: &str) -> Tar {
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            target.as_bytes(),
            0o644,
            b"",
        );
        self
    }

    fn kind(mut self, ty: EntryType, name: &str) -> Tar {
        self.raw(ty, name.as_bytes(), b"", 0o644, b"");
        self
    }

    fn done(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// A PAX record, its length counting itself.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = [b" ", key.as_bytes(), b"=", value, b"\n"].concat();
    let mut len = body.len() + 1;
    while len.to_string().len() + body.len() != len {
        len += 1;
    }
    [len.to_string().as_bytes(), &body].concat()
}

fn noise(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

fn sample() -> Vec<u8> {
    Tar::new()
        .dir("./", 0o755)
        .dir("./bin/", 0o755)
        .file("./bin/run", 0o755, b"#!/bin/sh\necho hi\n")
        .file("./bin/suid", 0o4755, b"x")
        .file("./Procfile", 0o666, b"web: bin/run\n")
        .file("./secret", 0o400, b"s")
        .dir("./lib/deep/er", 0o555)
        .file("./lib/deep/er/a.rb", 0o644, b"puts 1\n")
        .symlink("./current", "lib/deep")
        .symlink("./lib/deep/up", "../..")
        .symlink("./dangling", "not/yet/there")
        .hard_link("./run-too", "./bin/run")
        .done()
}

fn assert_sample(dest: &Path) {
    assert_eq!(
        fs::read(dest.join("bin/run")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
    assert_eq!(mode(&dest.join("bin/run")), 0o755);
    assert_eq!(mode(&dest.join("bin/suid")), 0o755, "setuid dropped");
    assert_eq!(
        mode(&dest.join("Procfile")),
        0o644,
        "group/other write dropped"
    );
    assert_eq!(mode(&dest.join("secret")), 0o600, "owner write added");
    assert_eq!(mode(&dest.join("lib/deep/er")), 0o755, "dirs get owner rwx");
    assert_eq!(mode(&dest.join("lib")), 0o755, "implied dirs are 0755");
    let mtime = fs::metadata(dest.join("bin/run")).unwrap().mtime();
    assert_eq!(mtime, 1_600_000_000);
    assert_eq!(
        fs::metadata(dest.join("lib/deep/er")).unwrap().mtime(),
        1_600_000_000
    );
    assert_eq!(
        fs::read_link(dest.join("current")).unwrap(),
        Path::new("lib/deep")
    );
    assert_eq!(fs::read(dest.join("current/er/a.rb")).unwrap(), b"puts 1\n");
    assert!(fs::symlink_metadata(dest.join("dangling"))
        .unwrap()
        .file_type()
        .is_symlink());
    let run = fs::metadata(dest.join("bin/run")).unwrap();
    let too = fs::metadata(dest.join("run-too")).unwrap();
    assert_eq!((run.ino(), run.nlink()), (too.ino(), 2));
    // The unpacking process owns everything (the archive says nothing about owners here,
    // and would not be listened to).
    let me = fs::metadata(dest).unwrap().uid();
    assert_eq!(run.uid(), me);
}

#[test]
fn plain_tar_unpacks_tree_links_and_modes() {
    let s = Scratch::new("plain");
    let got = s.unpack(&sample()).unwrap();
    // Everything but `./`: 2 dirs listed, 4 files, 1 dir, 1 file, 3 symlinks, 1 hard link.
    assert_eq!(got.entries, 11);
    assert_eq!(got.bytes, 18 + 1 + 13 + 1 + 7);
    assert_sample(&s.dest());
    s.assert_outside_untouched();
}

#[test]
fn gzip_is_detected_by_magic_not_name() {
    let s = Scratch::new("gzip");
    let got = s.unpack(&gzip(&sample())).unwrap();
    assert_eq!(got.entries, 11);
    assert_sample(&s.dest());
    s.assert_outside_untouched();
}

#[test]
fn names_without_dot_slash_long_and_not_utf8() {
    let s = Scratch::new("names");
    let long = format!("{}/{}", "d".repeat(80), "f".repeat(90));
    let mut tar = Tar::new().file("plain", 0o644, b"p");
    let mut h = Header::new_gnu();
    h.set_size(1);
    h.set_mode(0o644);
    // append_data writes a GNU long-name member first: the crate's parsing of it is used.
    tar.0.append_data(&mut h, &long, &b"l"[..]).unwrap();
    tar.raw(EntryType::Regular, b"caf\xe9", b"", 0o644, b"c");
    let got = s.unpack(&tar.done()).unwrap();
    assert_eq!(got.entries, 3);
    assert_eq!(fs::read(s.dest().join(&long)).unwrap(), b"l");
    use std::os::unix::ffi::OsStrExt;
    let latin1 = s.dest().join(std::ffi::OsStr::from_bytes(b"caf\xe9"));
    assert_eq!(fs::read(latin1).unwrap(), b"c");
    s.assert_outside_untouched();
}

#[test]
fn empty_archives_are_ok_with_zero_counts() {
    let s = Scratch::new("empty");
    let end_only = Tar::new().done();
    for archive in [end_only.clone(), gzip(&end_only), Vec::new(), gzip(b"")] {
        assert_eq!(s.unpack(&archive).unwrap(), Unpacked::default());
    }
    let dot_only = Tar::new().dir(".", 0o755).done();
    assert_eq!(s.unpack(&dot_only).unwrap(), Unpacked::default());
    assert_eq!(fs::read_dir(s.dest()).unwrap().count(), 0);
}

#[test]
fn later_file_replaces_earlier_and_spares_its_hard_links() {
    let s = Scratch::new("duplicates");
    let archive = Tar::new()
        .file("a", 0o644, b"old")
        .hard_link("b", "a")
        .file("a", 0o755, b"new")
        .dir("d", 0o700)
        .dir("d", 0o755)
        .hard_link("a", "a")
        .done();
    s.unpack(&archive).unwrap();
    assert_eq!(fs::read(s.dest().join("a")).unwrap(), b"new");
    assert_eq!(mode(&s.dest().join("a")), 0o755);
    assert_eq!(fs::read(s.dest().join("b")).unwrap(), b"old");
    assert_eq!(mode(&s.dest().join("d")), 0o755);
}

#[test]
fn pax_global_header_is_skipped_and_pax_path_used() {
    let s = Scratch::new("pax");
    let mut tar = Tar::new();
    tar.raw(
        EntryType::XGlobalHeader,
        b"pax_global_header",
        b"",
        0o666,
        &pax_record("comment", b"0123abcd"),
    );
    tar.raw(
        EntryType::XHeader,
        b"PaxHeader",
        b"",
        0o644,
        &pax_record("path", b"from/pax"),
    );
    tar.raw(EntryType::Regular, b"short", b"", 0o644, b"x");
    let got = s.unpack(&tar.done()).unwrap();
    assert_eq!(got.entries, 1);
    assert_eq!(fs::read(s.dest().join("from/pax")).unwrap(), b"x");
    assert!(!s.dest().join("pax_global_header").exists());
}

#[test]
fn symlink_loops_and_chains_inside_are_kept() {
    let s = Scratch::new("loops");
    let archive = Tar::new()
        .symlink("l1", "l2")
        .symlink("l2", "l1")
        .symlink("self", "self")
        .dir("a/b", 0o755)
        .symlink("a/b/up", "..")
        .symlink("a/b/top", "up/..")
        .symlink("chain", "a/b/up/b/top/a")
        .done();
    assert_eq!(s.unpack(&archive).unwrap().entries, 7);
    assert_eq!(fs::read_link(s.dest().join("l1")).unwrap(), Path::new("l2"));
    // The kernel agrees: `chain` ends at `a`.
    assert!(fs::metadata(s.dest().join("chain/b")).unwrap().is_dir());
    s.assert_outside_untouched();
}

#[test]
fn out_of_range_mtimes_are_dropped() {
    let s = Scratch::new("mtime");
    let mut tar = Tar::new();
    for (name, mtime) in [("max", u64::MAX), ("huge", 1 << 62)] {
        let mut h = Header::new_gnu();
        h.set_size(1);
        h.set_mode(0o644);
        // GNU headers write such times in base-256.
        h.set_mtime(mtime);
        tar.0.append_data(&mut h, name, &b"x"[..]).unwrap();
    }
    assert_eq!(s.unpack(&tar.done()).unwrap().entries, 2);
    assert_eq!(fs::read(s.dest().join("max")).unwrap(), b"x");
}

/// What users upload: GNU tar's `tar czf - .` of an app directory (GNU long names, hard links,
/// symlinks, an empty directory), in both of its formats.
#[test]
fn gnu_tar_czf_of_an_app_round_trips() {
    use std::os::unix::fs::symlink;
    use std::process::Command;
    let s = Scratch::new("gnu-tar");
    let app = s.base.join("app");
    let long = format!("vendor/{}/{}", "x".repeat(120), "y".repeat(120));
    let far = |up: &str| format!("{up}{}", "z".repeat(150));
    fs::create_dir_all(app.join(&long)).unwrap();
    fs::create_dir_all(app.join("bin")).unwrap();
    fs::create_dir_all(app.join("empty")).unwrap();
    fs::write(app.join("bin/web"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(app.join("bin/web"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(app.join(&long).join("f"), "deep").unwrap();
    fs::hard_link(app.join("bin/web"), app.join("web")).unwrap();
    symlink("bin/web", app.join("start")).unwrap();
    // `bin/far` with a long target: `../zzz…` stays inside, `../../zzz…` climbs out.
    let unpack_with_far = |format: &str, up: &str| {
        let _ = fs::remove_file(app.join("bin/far"));
        symlink(far(up), app.join("bin/far")).unwrap();
        let upload = s.base.join("upload");
        let status = Command::new("tar")
            .args(["--format", format, "-czf"])
            .arg(&upload)
            .arg("-C")
            .arg(&app)
            .arg(".")
            .status()
            .ok()?;
        assert!(status.success());
        fs::remove_dir_all(s.dest()).unwrap();
        fs::create_dir(s.dest()).unwrap();
        Some(unpack(&upload, &s.dest(), Limits::with_max_bytes(1 << 20)))
    };
    for format in ["gnu", "posix"] {
        let Some(refused) = unpack_with_far(format, "../../") else {
            eprintln!("no tar(1) here: skipped");
            return;
        };
        let err = refused.unwrap_err();
        assert!(
            matches!(err, ArchiveError::Escapes { ref path, ref target } if path == "./bin/far" && *target == far("../../")),
            "{format}: {err:?}"
        );
        let got = unpack_with_far(format, "../").unwrap().unwrap();
        let dest = s.dest();
        assert_eq!(got.bytes, 10 + 4, "{format}");
        assert_eq!(fs::read(dest.join(&long).join("f")).unwrap(), b"deep");
        assert_eq!(mode(&dest.join("bin/web")), 0o755);
        assert_eq!(fs::metadata(dest.join("web")).unwrap().nlink(), 2);
        assert_eq!(fs::read(dest.join("start")).unwrap(), b"#!/bin/sh\n");
        assert!(dest.join("empty").is_dir());
        assert_eq!(
            fs::read_link(dest.join("bin/far")).unwrap(),
            Path::new(&far("../"))
        );
    }
    fs::remove_dir_all(&app).unwrap();
    s.assert_outside_untouched();
}
