//! Malicious and broken archives: each is refused with its own error, and nothing appears
//! outside `dest`.

use tar::EntryType;

use super::*;

/// Unpacks `archive`, expecting an error, and checks nothing got out of `dest`.
fn refused(test: &str, archive: &[u8]) -> ArchiveError {
    refused_with(test, |_| archive.to_vec())
}

/// [`refused`] for an archive that names the scratch directory's own `outside/`.
fn refused_with(test: &str, archive: impl FnOnce(&Scratch) -> Vec<u8>) -> ArchiveError {
    let s = Scratch::new(test);
    let err = s.unpack(&archive(&s)).unwrap_err();
    s.assert_outside_untouched();
    err
}

#[test]
fn parent_and_absolute_names_are_refused() {
    for (test, name) in [
        ("dotdot", "../x"),
        ("dotdot-deep", "a/../../x"),
        ("dotdot-last", "a/.."),
        ("dotdot-outside", "../outside/sentinel"),
        ("absolute", "/outside/x"),
        ("absolute-real", ""),
    ] {
        let mut name = name.to_string();
        let err = refused_with(test, |s| {
            if name.is_empty() {
                name = format!("{}/sentinel", s.outside().display());
            }
            let tar = Tar::new().file("a/ok", 0o644, b"");
            tar.file(&name, 0o644, b"x").done()
        });
        assert!(
            matches!(err, ArchiveError::BadPath { ref path, .. } if *path == name),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("relative"), "{err}");
    }
}

#[test]
fn nul_in_a_pax_name_is_refused() {
    let mut tar = Tar::new();
    tar.raw(
        EntryType::XHeader,
        b"PaxHeader",
        b"",
        0o644,
        &pax_record("path", b"a\0b"),
    );
    tar.raw(EntryType::Regular, b"x", b"", 0o644, b"x");
    let err = refused("nul", &tar.done());
    assert!(matches!(err, ArchiveError::BadPath { .. }), "{err:?}");
}

#[test]
fn a_file_may_not_be_the_app_directory_itself() {
    let err = refused("dot-file", &Tar::new().file("./", 0o644, b"x").done());
    assert!(matches!(err, ArchiveError::BadPath { .. }), "{err:?}");
}

#[test]
fn a_symlink_needs_a_target() {
    let err = refused("empty-target", &Tar::new().symlink("l", "").done());
    assert!(
        matches!(err, ArchiveError::BadPath { ref path, .. } if path == "l"),
        "{err:?}"
    );
}

#[test]
fn symlink_to_absolute_then_write_through_is_refused() {
    let s = Scratch::new("abs-link");
    let target = s.outside().display().to_string();
    let archive = Tar::new()
        .symlink("a", &target)
        .file("a/passwd", 0o644, b"root::0:0::/:/bin/sh\n")
        .done();
    let err = s.unpack(&archive).unwrap_err();
    assert!(
        matches!(err, ArchiveError::Escapes { ref path, target: ref t } if path == "a" && *t == target),
        "{err:?}"
    );
    s.assert_outside_untouched();
}

#[test]
fn symlinks_climbing_out_are_refused() {
    for (test, name, target) in [
        ("climb", "l", "../../x"),
        ("climb-one", "l", ".."),
        ("climb-sub", "d/l", "../../outside"),
        ("climb-mid", "d/l", "../d/../../outside/sentinel"),
        ("etc", "a", "/etc"),
    ] {
        let err = refused(test, &Tar::new().symlink(name, target).done());
        assert!(
            matches!(err, ArchiveError::Escapes { ref path, .. } if path == name),
            "{test}: {err:?}"
        );
        assert!(err.to_string().contains("outside the app"), "{err}");
    }
}

#[test]
fn symlink_escaping_through_another_link_is_refused() {
    // `d/a -> ..` is the app's root, so `d/a/..` is its parent.
    let archive = Tar::new()
        .dir("d", 0o755)
        .symlink("d/a", "..")
        .symlink("e", "d/a/../outside")
        .done();
    let err = refused("via-link", &archive);
    assert!(
        matches!(err, ArchiveError::Escapes { ref path, .. } if path == "e"),
        "{err:?}"
    );
}

#[test]
fn symlink_made_to_escape_by_a_later_member_is_refused() {
    // When `e` comes, `d/a` does not exist and `d/a/../outside` is `d/outside`; the later
    // `d/a -> ..` turns it into the app's parent's `outside`.
    let archive = Tar::new()
        .dir("d", 0o755)
        .symlink("e", "d/a/../outside")
        .symlink("d/a", "..")
        .done();
    let err = refused("later-link", &archive);
    assert!(
        matches!(err, ArchiveError::Escapes { ref path, .. } if path == "e"),
        "{err:?}"
    );
}

#[test]
fn writing_through_an_inside_symlink_is_refused() {
    let s = Scratch::new("through");
    let archive = Tar::new()
        .dir("sub", 0o755)
        .symlink("a", "sub")
        .file("a/passwd", 0o644, b"x")
        .done();
    let err = s.unpack(&archive).unwrap_err();
    assert!(
        matches!(err, ArchiveError::ThroughSymlink { ref path, ref link } if path == "a/passwd" && link == "a"),
        "{err:?}"
    );
    assert!(!s.dest().join("sub/passwd").exists());
    s.assert_outside_untouched();
}

#[test]
fn hard_links_out_of_the_tree_are_refused() {
    for (test, target) in [("hl-dotdot", "../outside/sentinel"), ("hl-abs", "")] {
        let err = refused_with(test, |s| {
            let abs = format!("{}/sentinel", s.outside().display());
            let target = if target.is_empty() { &abs } else { target };
            Tar::new().hard_link("h", target).done()
        });
        assert!(
            matches!(err, ArchiveError::Escapes { ref path, .. } if path == "h"),
            "{test}: {err:?}"
        );
    }
}

#[test]
fn hard_links_to_what_is_not_an_unpacked_file_are_refused() {
    for (test, tar) in [
        ("hl-missing", Tar::new().hard_link("h", "nope")),
        ("hl-dir", Tar::new().dir("d", 0o755).hard_link("h", "d")),
        ("hl-root", Tar::new().hard_link("h", "./")),
        (
            "hl-symlink",
            Tar::new()
                .file("f", 0o644, b"")
                .symlink("l", "f")
                .hard_link("h", "l"),
        ),
        (
            "hl-via-symlink",
            Tar::new()
                .file("sub/f", 0o644, b"")
                .symlink("l", "sub")
                .hard_link("h", "l/f"),
        ),
    ] {
        let err = refused(test, &tar.done());
        assert!(
            matches!(err, ArchiveError::HardLink { ref path, .. } if path == "h"),
            "{test}: {err:?}"
        );
    }
}

#[test]
fn devices_fifos_and_unknown_types_are_unsupported() {
    for (test, ty, kind) in [
        ("char", EntryType::Char, "a character device"),
        ("block", EntryType::Block, "a block device"),
        ("fifo", EntryType::Fifo, "a FIFO (named pipe)"),
        ("unknown", EntryType::new(b'Z'), "of unknown type 'Z'"),
    ] {
        let err = refused(test, &Tar::new().kind(ty, "dev/thing").done());
        assert!(
            matches!(err, ArchiveError::Unsupported { ref path, kind: ref k } if path == "dev/thing" && k == kind),
            "{test}: {err:?}"
        );
    }
}

#[test]
fn replacing_a_directory_or_symlink_is_a_conflict() {
    for (test, tar, path) in [
        (
            "file-over-dir",
            Tar::new().dir("d", 0o755).file("d", 0o644, b""),
            "d",
        ),
        (
            "file-over-link",
            Tar::new().symlink("l", "x").file("l", 0o644, b""),
            "l",
        ),
        (
            "link-over-file",
            Tar::new().file("f", 0o644, b"").symlink("f", "x"),
            "f",
        ),
        (
            "dir-over-file",
            Tar::new().file("f", 0o644, b"").dir("f", 0o755),
            "f",
        ),
        (
            "under-a-file",
            Tar::new().file("f", 0o644, b"").file("f/x", 0o644, b""),
            "f",
        ),
        (
            "hl-over-dir",
            Tar::new()
                .file("f", 0o644, b"")
                .dir("d", 0o755)
                .hard_link("d", "f"),
            "d",
        ),
    ] {
        let err = refused(test, &tar.done());
        assert!(
            matches!(err, ArchiveError::Conflict { path: ref p, .. } if p == path),
            "{test}: {err:?}"
        );
    }
}

#[test]
fn garbage_is_not_an_archive() {
    let tar = sample();
    let cut_header = tar[..300].to_vec();
    // The first member's data starts at 1024 (after `./` and `./bin/`, then `bin/run`'s
    // header): cut in the middle of it.
    let cut_data = tar[..1536 + 5].to_vec();
    let gz = gzip(&tar);
    for (test, archive, why) in [
        (
            "random",
            noise(10_000),
            "it does not start with a tar header",
        ),
        (
            "random-gzip",
            gzip(&noise(10_000)),
            "it does not start with a tar header",
        ),
        (
            "gzip-magic-then-junk",
            [&[0x1f, 0x8b][..], &noise(100)].concat(),
            "its compressed data is damaged or cut short (",
        ),
        (
            "cut-header",
            cut_header,
            "it is shorter than one tar header",
        ),
        ("cut-data", cut_data, "`./bin/run` is cut short"),
        (
            "cut-gzip",
            gz[..gz.len() / 2].to_vec(),
            "its compressed data is damaged or cut short (",
        ),
        (
            "text",
            b"web: bundle exec puma\n".to_vec(),
            "it is shorter than one tar header",
        ),
    ] {
        let err = refused(test, &archive);
        let text = err.to_string();
        assert!(
            matches!(err, ArchiveError::NotAnArchive(ref w) if w.starts_with(why)),
            "{test}: {text}"
        );
        assert!(
            text.starts_with("the source is not a tar archive (gzip or plain): ")
                && text.ends_with("; upload `tar czf - .` of the app"),
            "{text}"
        );
    }
}

#[test]
fn too_many_entries() {
    let s = Scratch::new("entries");
    let mut tar = Tar::new();
    for i in 0..6 {
        tar = tar.file(&format!("f{i}"), 0o644, b"x");
    }
    let limits = Limits {
        max_entries: 5,
        max_bytes: 1 << 20,
    };
    let err = s.unpack_within(&tar.done(), limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooLarge(Exceeded::Entries { max: 5 })),
        "{err:?}"
    );
    assert!(!s.dest().join("f5").exists());
    s.assert_outside_untouched();
}

#[test]
fn too_many_bytes_stops_before_writing() {
    let s = Scratch::new("bytes");
    let archive = gzip(
        &Tar::new()
            .file("a", 0o644, &[0; 600])
            .file("b", 0o644, &[0; 500])
            .done(),
    );
    let limits = Limits {
        max_entries: 10,
        max_bytes: 1000,
    };
    let err = s.unpack_within(&archive, limits).unwrap_err();
    assert!(
        matches!(err, ArchiveError::TooLarge(Exceeded::Bytes { max: 1000 })),
        "{err:?}"
    );
    assert!(err.to_string().contains("more than 1K"), "{err}");
    assert!(!s.dest().join("b").exists());
    // Exactly at the limit is fine.
    let s = Scratch::new("bytes-exact");
    let exact = Tar::new().file("a", 0o644, &[1; 1000]).done();
    assert_eq!(s.unpack_within(&exact, limits).unwrap().bytes, 1000);
}

#[test]
fn huge_long_name_is_cut_off_before_it_is_read() {
    // A gzip'd 4 MiB GNU long name: without the cap the tar crate would read it all into
    // memory before our checks ever saw a member.
    let mut tar = Tar::new();
    tar.raw(
        EntryType::GNULongName,
        b"././@LongLink",
        b"",
        0o644,
        &vec![b'a'; 4 << 20],
    );
    tar.raw(EntryType::Regular, b"x", b"", 0o644, b"x");
    let err = refused("long-name", &gzip(&tar.done()));
    assert!(
        matches!(err, ArchiveError::TooLarge(Exceeded::Headers { .. })),
        "{err:?}"
    );
}

#[test]
fn data_on_a_directory_is_not_decompressed_unbounded() {
    let mut tar = Tar::new();
    tar.raw(EntryType::Directory, b"d", b"", 0o755, &vec![0; 8 << 20]);
    let err = refused("dir-data", &gzip(&tar.done()));
    assert!(
        matches!(err, ArchiveError::TooLarge(Exceeded::Headers { .. })),
        "{err:?}"
    );
}

#[test]
fn every_error_says_what_to_do() {
    let errors = [
        ArchiveError::NotAnArchive("x".into()),
        ArchiveError::Unsupported {
            path: "p".into(),
            kind: "a FIFO (named pipe)".into(),
        },
        ArchiveError::TooLarge(Exceeded::Entries { max: 200_000 }),
    ];
    for err in errors {
        let text = err.to_string();
        assert!(text.contains(';'), "{text}");
    }
}
