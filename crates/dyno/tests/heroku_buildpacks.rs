//! Heroku's own CLI manages an app's buildpacks on `dyno serve` (privileged: run as root):
//! `heroku buildpacks`, `buildpacks:add` (with `--index`), `buildpacks:set`,
//! `buildpacks:remove` and `buildpacks:clear`; the next build runs what they set.

mod support;

use support::heroku::*;
use support::*;

#[test]
fn heroku_buildpacks_commands_set_what_the_next_build_runs() {
    require_root();
    let h = Heroku::start("heroku-buildpacks");
    h.ok(&["apps:create", APP]);
    contains(
        &h.ok(&["buildpacks", "-a", APP]),
        &format!("{APP} has no Buildpacks."),
    );

    // A buildpack of the daemon's host, as a file:// URL (the CLI takes URLs as they are).
    let bp = h.up.scratch.join("greeter");
    std::fs::create_dir_all(bp.join("bin")).unwrap();
    for (script, body) in [
        ("detect", "echo Greeter"),
        ("compile", "echo '       greeter compiled'"),
        ("release", "echo ---"),
    ] {
        let path = bp.join("bin").join(script);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let url = format!("file://{}", bp.display());
    let added = h.ok(&["buildpacks:add", &url, "-a", APP]);
    contains(&added, "Buildpack added");
    contains(&added, &url);
    let other = "https://buildpacks.invalid/other.tgz";
    h.ok(&["buildpacks:add", "--index", "1", other, "-a", APP]);
    let listed = h.ok(&["buildpacks", "-a", APP]);
    contains(&listed, &format!("1. {other}"));
    contains(&listed, &format!("2. {url}"));
    let (out, _) = h.up.cli_succeeds(&["buildpacks", "-a", APP, "--json"]);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(list[0]["buildpack"]["url"], other);
    assert_eq!(list[1]["buildpack"]["url"], url.as_str());

    contains(
        &h.ok(&["buildpacks:remove", other, "-a", APP]),
        "Buildpack removed",
    );
    let listed = h.ok(&["buildpacks", "-a", APP]);
    assert!(!listed.contains(other), "{listed}");
    contains(&listed, &url);

    // The next build runs it.
    let hello = repo().join("examples/hello");
    let (_, out) =
        h.up.cli_succeeds(&["deploy", hello.to_str().unwrap(), "-a", APP]);
    contains(&out, &format!("-----> Using buildpack: {url}"));
    contains(&out, "-----> Greeter app detected");
    contains(&out, "greeter compiled");

    h.ok(&["buildpacks:set", other, "-a", APP]);
    let listed = h.ok(&["buildpacks", "-a", APP]);
    contains(&listed, other);
    assert!(!listed.contains(&url), "{listed}");
    contains(
        &h.ok(&["buildpacks:clear", "-a", APP]),
        "Buildpacks cleared",
    );
    contains(
        &h.ok(&["buildpacks", "-a", APP]),
        &format!("{APP} has no Buildpacks."),
    );
}
