//! Bad build input, each refused with a clear message and nothing released (privileged: run as
//! root): an unknown app, a source that is not a tarball, tarballs whose paths escape the build
//! dir (`../`, absolute, through a symlink out), an empty source, an app no buildpack detects,
//! and one with neither a Procfile nor a buildpack's default process types.

mod support;

use std::path::{Path, PathBuf};

use dyno_api::ApiClient;
use support::*;

const APP: &str = "refused";

fn serve(tag: &str) -> Up {
    let up = Up::serve(tag, &["--boot-timeout", "20s", "--stop-grace", "2s"]);
    up.wait_api();
    up.cli_succeeds(&["apps:create", APP]);
    up
}

/// Uploads `archive` as a source of the app and builds it; the build's output and status.
fn build_archive(up: &Up, archive: Vec<u8>) -> (String, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let api = ApiClient::unix(up.api_socket());
    runtime.block_on(async {
        let source = api.create_source(APP).await.unwrap();
        api.upload_source(&source.source_blob.put_url, archive.clone().into())
            .await
            .unwrap();
        // The get_url reads back what was put, byte for byte.
        let path = source
            .source_blob
            .get_url
            .split_once("/sources/")
            .unwrap()
            .1;
        let read = api
            .request(
                hyper::Method::GET,
                &format!("/sources/{path}"),
                None,
                bytes::Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!((read.status, read.body.as_ref()), (200, archive.as_slice()));
        let build = api
            .create_build(
                APP,
                &source.source_blob.get_url,
                Some("0123456789abcdef"),
                None,
            )
            .await
            .unwrap();
        let mut output = String::new();
        api.stream_build_output(&build.output_stream_url, |lines| {
            for line in lines {
                output.push_str(line);
                output.push('\n');
            }
        })
        .await
        .unwrap();
        let build = api.build(APP, &build.id).await.unwrap();
        (output, build.status)
    })
}

/// A tarball made by Python's `tarfile` from a script that adds members to `tar`.
fn python_tarball(up: &Up, members: &str) -> Vec<u8> {
    let out = up.scratch.join("crafted.tar");
    let script = format!(
        "import io, tarfile\n\
         tar = tarfile.open({out:?}, 'w')\n\
         def add(name, data=b'x', kind=tarfile.REGTYPE, link=''):\n\
         \x20   info = tarfile.TarInfo(name); info.type = kind; info.linkname = link\n\
         \x20   info.size = len(data) if kind == tarfile.REGTYPE else 0\n\
         \x20   tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)\n\
         add('Procfile', b'web: exec python3 -m http.server $PORT\\n')\n\
         {members}\n\
         tar.close()\n",
        out = out.to_string_lossy()
    );
    let status = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .status()
        .unwrap();
    assert!(status.success(), "python3 could not make the tarball");
    std::fs::read(&out).unwrap()
}

fn release_versions(up: &Up) -> Vec<u64> {
    let (out, _) = up.cli_succeeds(&["releases", "-a", APP, "--json"]);
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).unwrap();
    list.iter()
        .map(|r| r["version"].as_u64().unwrap())
        .collect()
}

fn assert_refused(up: &Up, archive: Vec<u8>, says: &str) {
    let (output, status) = build_archive(up, archive);
    assert_eq!(status, "failed", "{output}");
    assert!(output.contains(says), "no {says:?} in:\n{output}");
    assert_eq!(
        release_versions(up),
        [1],
        "something was released:\n{output}"
    );
}

#[test]
fn an_unknown_app_is_named_in_the_error() {
    let up = serve("refused-app");
    let hello = repo().join("examples/hello");
    let (ok, _, err) = up.cli_result(&["deploy", &hello.to_string_lossy(), "-a", "no-such-app"]);
    assert!(!ok);
    assert!(err.contains("no app named no-such-app"), "{err}");
}

#[test]
fn a_source_that_is_not_a_tarball_or_is_empty_is_refused() {
    let up = serve("refused-garbage");
    assert_refused(
        &up,
        b"this is not a tarball at all, just some words".to_vec(),
        "is not a tar archive",
    );
    // Two zero blocks: a tarball with nothing in it.
    assert_refused(&up, vec![0; 1024], "the source is empty");
}

#[test]
fn paths_escaping_the_build_dir_are_refused_and_nothing_is_written_outside() {
    let up = serve("refused-paths");
    let outside: PathBuf = std::env::temp_dir().join(format!("dyno-escape-{}", std::process::id()));
    let _ = std::fs::remove_file(&outside);
    for (members, says) in [
        ("add('../escaped')".to_string(), "Push rejected"),
        (
            format!("add({:?})", outside.to_string_lossy()),
            "Push rejected",
        ),
        (
            "add('out', kind=tarfile.SYMTYPE, link='/etc')\nadd('out/passwd')".to_string(),
            "Push rejected",
        ),
        (
            "add('up', kind=tarfile.SYMTYPE, link='../../..')".to_string(),
            "Push rejected",
        ),
    ] {
        let archive = python_tarball(&up, &members);
        assert_refused(&up, archive, says);
    }
    assert!(!outside.exists(), "{} was written", outside.display());
    assert!(!Path::new("/etc/passwd.dyno-test").exists());
    let data = up.scratch.join("data");
    let escaped: Vec<_> = walk(&data)
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "escaped"))
        .collect();
    assert!(escaped.is_empty(), "{escaped:?}");
}

#[test]
fn an_app_nothing_detects_or_without_process_types_is_refused() {
    let up = serve("refused-types");
    let plain = app_dir("refused-plain", "");
    std::fs::remove_file(plain.join("Procfile")).unwrap();
    std::fs::write(plain.join("index.html"), "<p>hi</p>").unwrap();
    let (ok, _, out) = up.cli_result(&["deploy", &plain.to_string_lossy(), "-a", APP]);
    assert!(!ok);
    assert!(
        out.contains(" !     No default language could be detected for this app."),
        "{out}"
    );
    // A buildpack that builds but names no process type, and no Procfile.
    let bp = up.scratch.join("silent-bp");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    for (script, body) in [
        ("detect", "echo Silent"),
        ("compile", "true"),
        ("release", "echo ---"),
    ] {
        let path = bp.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    up.cli_succeeds(&["buildpacks:set", &bp.to_string_lossy(), "-a", APP]);
    let (ok, _, out) = up.cli_result(&["deploy", &plain.to_string_lossy(), "-a", APP]);
    assert!(!ok);
    assert!(
        out.contains("No Procfile and no default process types"),
        "{out}"
    );
    assert_eq!(release_versions(&up), [1]);
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                found.extend(walk(&path));
            }
            found.push(path);
        }
    }
    found
}
