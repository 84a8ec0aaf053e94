//! The buildpacks shipped in `buildpacks/`, run as the classic buildpack API runs them
//! (`bin/detect`, `bin/compile`, `bin/release` as processes on temp BUILD/CACHE/ENV dirs), without
//! the platform's sandbox. Every python compile runs with `PIP_NO_INDEX=1` and installs only
//! what the test made on disk (a source package, a wheel), so nothing goes over the network.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, named from the test and the pid (two runs of the
/// suite don't collide), removed on drop so a failed assertion leaves nothing behind either.
struct TempDir(PathBuf);

impl TempDir {
    fn new(test: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("dyno-bp-{test}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        fs::create_dir_all(&path).expect("create the test's temp dir");
        TempDir(path)
    }

    /// A new empty directory inside this one.
    fn dir(&self, name: &str) -> PathBuf {
        let path = self.0.join(name);
        fs::create_dir_all(&path).expect("create a dir in the test's temp dir");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().expect("a file has a parent dir")).expect("create parents");
    fs::write(path, content).expect("write a test file");
}

fn script(buildpack: &str, name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../buildpacks")
        .join(buildpack)
        .join("bin")
        .join(name)
}

/// What a buildpack script did, with both streams kept for the failure messages.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }

    fn assert_ok(&self, what: &str) {
        assert_eq!(self.code, Some(0), "{what} failed:\n{}", self.show());
    }

    fn assert_has(&self, line: &str) {
        assert!(
            self.stdout.lines().any(|l| l == line),
            "no line {line:?} in the output:\n{}",
            self.show()
        );
    }

    fn assert_lacks(&self, text: &str) {
        assert!(
            !self.stdout.contains(text),
            "{text:?} should not be in the output:\n{}",
            self.show()
        );
    }
}

/// Runs a command in the environment the platform gives a build: an empty one but for PATH and
/// HOME. The host's own variables stay out (this machine sets PIP_FIND_LINKS, for one, and a
/// pyenv python3 ahead of the stack's on PATH), so the scripts see only what the test gives.
/// `timeout` bounds a hung pip; it signals its whole process group, so nothing is left running.
fn run_in(home: &Path, program: &Path, args: &[&Path], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new("timeout");
    cmd.args(["-k", "5", "120"]).arg(program).args(args);
    cmd.env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .current_dir(home);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out: Output = cmd
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    let run = Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    assert_ne!(
        run.code,
        Some(124),
        "{} ran over 120 s:\n{}",
        program.display(),
        run.show()
    );
    run
}

fn detect(t: &TempDir, buildpack: &str, build: &Path) -> Run {
    run_in(&t.0, &script(buildpack, "detect"), &[build], &[])
}

fn compile(t: &TempDir, buildpack: &str, build: &Path, cache: &Path, env: &Path) -> Run {
    run_in(
        &t.0,
        &script(buildpack, "compile"),
        &[build, cache, env],
        &[],
    )
}

fn release(t: &TempDir, buildpack: &str, build: &Path) -> Run {
    run_in(&t.0, &script(buildpack, "release"), &[build], &[])
}

/// Every file under `dir`, relative, sorted: what a build left in the build dir.
fn files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        for entry in fs::read_dir(dir).expect("read a dir") {
            let path = entry.expect("a dir entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(
                    path.strip_prefix(root)
                        .expect("under root")
                        .display()
                        .to_string(),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[test]
fn procfile_detects_an_app_with_a_procfile_and_nothing_else() {
    let t = TempDir::new("procfile-detect");
    let app = t.dir("app");
    write(&app.join("web.py"), "print('hi')\n");
    let no = detect(&t, "procfile", &app);
    assert_eq!(
        no.code,
        Some(1),
        "no Procfile, yet detected:\n{}",
        no.show()
    );
    assert_eq!(no.stdout, "", "a refusal prints no buildpack name");

    write(&app.join("Procfile"), "web: python3 web.py\n");
    let yes = detect(&t, "procfile", &app);
    yes.assert_ok("detect with a Procfile");
    assert_eq!(yes.stdout, "Procfile\n");
}

#[test]
fn procfile_compile_lists_the_types_and_builds_nothing() {
    let t = TempDir::new("procfile-compile");
    let (app, cache, env) = (t.dir("app"), t.dir("cache"), t.dir("env"));
    // The example this buildpack exists for, plus what a hand-written Procfile may have:
    // comments, blank lines, indentation, Windows line endings, and lines the platform would
    // not take (no colon, a capital in a type's name).
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/hello/Procfile");
    let procfile = fs::read_to_string(&hello).expect("read examples/hello/Procfile");
    write(
        &app.join("Procfile"),
        &format!("# the processes\n\n{procfile}  clock_2 : date\r\nnot a type\nClock: date\n"),
    );
    write(&app.join("web.py"), "print('hi')\n");
    let before = files(&app);

    let run = compile(&t, "procfile", &app, &cache, &env);
    run.assert_ok("compile");
    run.assert_has("-----> No build step: the app runs as pushed");
    run.assert_has("       Process types in the Procfile: web, worker, clock_2, Clock");
    run.assert_has(" !     Procfile line 6 is not `name: command`: not a type");
    run.assert_has(
        " !     Procfile line 7: process type `Clock` should be lowercase and start with a letter",
    );
    assert_eq!(files(&app), before, "compile changed the build dir");
    assert_eq!(
        files(&cache),
        Vec::<String>::new(),
        "compile wrote to the cache"
    );

    fs::remove_file(app.join("Procfile")).expect("remove the Procfile");
    let none = compile(&t, "procfile", &app, &cache, &env);
    assert_eq!(
        none.code,
        Some(1),
        "compile without a Procfile succeeded:\n{}",
        none.show()
    );
    assert!(
        none.stdout.starts_with(" !     No Procfile"),
        "{}",
        none.show()
    );
}

#[test]
fn procfile_release_is_a_yaml_document() {
    let t = TempDir::new("procfile-release");
    let app = t.dir("app");
    write(&app.join("Procfile"), "web: python3 web.py\n");
    let run = release(&t, "procfile", &app);
    run.assert_ok("release");
    assert!(
        run.stdout.starts_with("---\n"),
        "release is not a YAML document:\n{}",
        run.show()
    );
}

#[test]
fn python_detects_requirements_setup_py_or_pyproject() {
    let t = TempDir::new("python-detect");
    for file in ["requirements.txt", "setup.py", "pyproject.toml"] {
        let app = t.dir(&format!("app-{file}"));
        write(&app.join(file), "");
        let run = detect(&t, "python", &app);
        run.assert_ok(&format!("detect with {file}"));
        assert_eq!(run.stdout, "Python\n");
    }
    let other = t.dir("app-procfile-only");
    write(&other.join("Procfile"), "web: python3 web.py\n");
    write(&other.join("web.py"), "print('hi')\n");
    let run = detect(&t, "python", &other);
    assert_eq!(
        run.code,
        Some(1),
        "detected an app with no Python dependency file:\n{}",
        run.show()
    );
    assert_eq!(run.stdout, "");
}

#[test]
fn python_release_sets_unbuffered_and_a_web_type_only_for_app_py_without_procfile() {
    let t = TempDir::new("python-release");
    let app = t.dir("app");
    write(&app.join("requirements.txt"), "");
    let bare = release(&t, "python", &app);
    bare.assert_ok("release");
    assert_eq!(
        bare.stdout,
        "---\nconfig_vars:\n  PYTHONUNBUFFERED: \"1\"\n"
    );

    write(&app.join("app.py"), "print('hi')\n");
    let with_app = release(&t, "python", &app);
    with_app.assert_ok("release with app.py");
    assert_eq!(
        with_app.stdout,
        "---\ndefault_process_types:\n  web: python app.py\nconfig_vars:\n  PYTHONUNBUFFERED: \"1\"\n"
    );

    write(&app.join("Procfile"), "web: python app.py --port $PORT\n");
    let with_procfile = release(&t, "python", &app);
    with_procfile.assert_ok("release with a Procfile");
    assert_eq!(
        with_procfile.stdout, bare.stdout,
        "the Procfile wins: no default type"
    );
}

/// The python buildpack needs the stack's python3 with venv; without it the tests fail (never
/// skip) and say what to install.
fn require_python_venv() {
    let ok = Command::new("/usr/bin/python3")
        .args(["-c", "import venv, ensurepip"])
        .output()
        .is_ok_and(|out| out.status.success());
    assert!(ok, "the python buildpack needs the stack's /usr/bin/python3 with venv: apt-get install python3 python3-venv");
}

/// A source package with only a setup.py: on Debian 12's venv (no `wheel`) pip installs that
/// offline with the venv's setuptools, where a pyproject.toml build would need more wheels.
fn package_source(dir: &Path, greeting: &str) {
    write(
        &dir.join("setup.py"),
        "from setuptools import setup\n\nsetup(name=\"mypkg\", version=\"0.1.0\", packages=[\"mypkg\"])\n",
    );
    write(
        &dir.join("mypkg/__init__.py"),
        &format!("GREETING = {greeting:?}\n"),
    );
}

/// The package as an app ships a library of its own: in `./localpkg`.
fn local_package(app: &Path, greeting: &str) {
    package_source(&app.join("localpkg"), greeting);
}

/// A ready-made wheel in `dir` (what an app vendors for PIP_FIND_LINKS): a zip of the module
/// and its dist-info, zipped by the stack's python so the test needs no zip crate.
fn vendored_wheel(t: &TempDir, dir: &Path, name: &str, value: u32) {
    let src = t.dir(&format!("wheel-src-{name}"));
    let info = format!("{name}-1.0.dist-info");
    write(
        &src.join(name).join("__init__.py"),
        &format!("VALUE = {value}\n"),
    );
    write(
        &src.join(&info).join("METADATA"),
        &format!("Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n"),
    );
    write(
        &src.join(&info).join("WHEEL"),
        "Wheel-Version: 1.0\nGenerator: dyno-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    );
    let record =
        format!("{name}/__init__.py,,\n{info}/METADATA,,\n{info}/WHEEL,,\n{info}/RECORD,,\n");
    write(&src.join(&info).join("RECORD"), &record);
    fs::create_dir_all(dir).expect("create the wheels dir");
    let whl = dir.join(format!("{name}-1.0-py3-none-any.whl"));
    let out = Command::new("/usr/bin/python3")
        .args(["-m", "zipfile", "-c"])
        .arg(&whl)
        .args([name, info.as_str()])
        .current_dir(&src)
        .output()
        .expect("run python3 -m zipfile");
    assert!(
        out.status.success(),
        "zip the wheel: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An ENV_DIR as the platform writes it: one file per config var, the value without a newline.
fn env_dir(t: &TempDir, name: &str, vars: &[(&str, &str)]) -> PathBuf {
    let dir = t.dir(name);
    for (k, v) in vars {
        write(&dir.join(k), v);
    }
    dir
}

/// Runs `code` with the build's venv python, from the test's temp dir (not the app's, so the
/// import comes from the venv's site-packages).
fn venv_python(t: &TempDir, app: &Path, code: &str) -> Run {
    let python = app.join(".heroku/venv/bin/python");
    run_in(&t.0, &python, &[Path::new("-c"), Path::new(code)], &[])
}

#[test]
fn python_compile_installs_a_local_package_and_the_next_build_reuses_the_cache() {
    require_python_venv();
    let t = TempDir::new("python-cache");
    let (app, cache) = (t.dir("app"), t.dir("cache"));
    local_package(&app, "hello");
    write(&app.join("requirements.txt"), "./localpkg\n");
    // PIP_CONSTRAINT is a pip setting outside the buildpack's list: were it passed on, pip
    // would fail on the missing file. DATABASE_URL is run-time config a build must not show.
    let env = env_dir(
        &t,
        "env",
        &[
            ("PIP_NO_INDEX", "1"),
            ("PIP_CONSTRAINT", "/nonexistent/constraints.txt"),
            ("DATABASE_URL", "postgres://x"),
        ],
    );

    let first = compile(&t, "python", &app, &cache, &env);
    first.assert_ok("the first compile");
    assert!(
        first
            .stdout
            .lines()
            .any(|l| l.starts_with("-----> Using Python 3.") && l.contains("from the stack")),
        "no interpreter line:\n{}",
        first.show()
    );
    first.assert_has("       Config var PIP_NO_INDEX is set for pip");
    first.assert_has("-----> Installing requirements.txt with pip");
    first.assert_has("       Successfully installed mypkg-0.1.0");
    first.assert_lacks("reusing the cached virtualenv");
    first.assert_lacks("PIP_CONSTRAINT");
    first.assert_lacks("DATABASE_URL");

    let import = venv_python(&t, &app, "import mypkg; print(mypkg.GREETING)");
    import.assert_ok("import mypkg with the venv's python");
    assert_eq!(import.stdout, "hello\n");

    // The profile script as a dyno start sources it: bash, HOME=/app (here: the build dir).
    let profile =
        fs::read_to_string(app.join(".profile.d/python.sh")).expect("read .profile.d/python.sh");
    assert!(
        !profile.contains(&*app.to_string_lossy()),
        "the profile names the build dir:\n{profile}"
    );
    let sourced = run_in(
        &t.0,
        Path::new("bash"),
        &[
            Path::new("-c"),
            Path::new(
                "HOME=$BUILD; cd \"$HOME\"; . \"$HOME/.profile.d/python.sh\"; command -v python; \
                 echo \"VIRTUAL_ENV=$VIRTUAL_ENV PYTHONUNBUFFERED=$PYTHONUNBUFFERED\"; \
                 python -c 'import mypkg; print(mypkg.GREETING)'",
            ),
        ],
        &[("BUILD", &app)],
    );
    sourced.assert_ok("sourcing .profile.d/python.sh");
    let venv = app.join(".heroku/venv");
    assert_eq!(
        sourced.stdout,
        format!(
            "{}\nVIRTUAL_ENV={} PYTHONUNBUFFERED=1\nhello\n",
            venv.join("bin/python").display(),
            venv.display()
        )
    );

    // A new push: a fresh build dir elsewhere, the same requirements, the same cache.
    let again = t.dir("app-again");
    local_package(&again, "hello");
    write(&again.join("requirements.txt"), "./localpkg\n");
    let second = compile(&t, "python", &again, &cache, &env);
    second.assert_ok("the second compile");
    second.assert_has("-----> Requirements unchanged: reusing the cached virtualenv");
    second.assert_lacks("Installing requirements.txt");
    let import = venv_python(&t, &again, "import mypkg; print(mypkg.GREETING)");
    import.assert_ok("import mypkg from the reused venv");
    assert_eq!(import.stdout, "hello\n");
    // A console script (pip's) has a shebang: the copy must name the new build dir.
    let pip = run_in(
        &t.0,
        &again.join(".heroku/venv/bin/pip"),
        &[Path::new("--version")],
        &[],
    );
    pip.assert_ok("the reused venv's pip script");
    assert!(
        pip.stdout.contains(&*again.to_string_lossy()),
        "pip runs from the old venv:\n{}",
        pip.show()
    );
    assert!(
        again.join(".profile.d/python.sh").is_file(),
        "the reused build has no profile script"
    );
}

#[test]
fn python_compile_reinstalls_when_requirements_change() {
    require_python_venv();
    let t = TempDir::new("python-changed");
    let (app, cache) = (t.dir("app"), t.dir("cache"));
    local_package(&app, "hello");
    write(&app.join("requirements.txt"), "./localpkg\n");
    let env = env_dir(
        &t,
        "env",
        &[("PIP_NO_INDEX", "1"), ("PIP_FIND_LINKS", "vendor/wheels")],
    );
    compile(&t, "python", &app, &cache, &env).assert_ok("the first compile");

    // The next push adds a pinned requirement, found among wheels the app vendors.
    let next = t.dir("app-next");
    local_package(&next, "hello");
    vendored_wheel(&t, &next.join("vendor/wheels"), "extra", 42);
    write(&next.join("requirements.txt"), "./localpkg\nextra==1.0\n");
    let second = compile(&t, "python", &next, &cache, &env);
    second.assert_ok("the compile with changed requirements");
    second.assert_has("-----> Requirements changed: installing them afresh");
    second.assert_has(
        "-----> Creating a virtualenv in .heroku/venv (a copy of the cached empty one)",
    );
    second.assert_has("       Config var PIP_FIND_LINKS is set for pip");
    second.assert_lacks("reusing the cached virtualenv");
    let import = venv_python(
        &t,
        &next,
        "import mypkg, extra; print(mypkg.GREETING, extra.VALUE)",
    );
    import.assert_ok("import both packages");
    assert_eq!(import.stdout, "hello 42\n");
    let pip = run_in(
        &t.0,
        &next.join(".heroku/venv/bin/pip"),
        &[Path::new("--version")],
        &[],
    );
    pip.assert_ok("pip's script in a venv copied from the cached empty one");

    // The same requirements.txt, but the local package's source changed: that is a change too.
    let edited = t.dir("app-edited");
    local_package(&edited, "edited");
    vendored_wheel(&t, &edited.join("vendor/wheels"), "extra", 42);
    write(&edited.join("requirements.txt"), "./localpkg\nextra==1.0\n");
    let third = compile(&t, "python", &edited, &cache, &env);
    third.assert_ok("the compile with an edited local package");
    third.assert_has("-----> Requirements changed: installing them afresh");
    let import = venv_python(&t, &edited, "import mypkg; print(mypkg.GREETING)");
    import.assert_ok("import the edited package");
    assert_eq!(import.stdout, "edited\n");
}

#[test]
fn python_compile_fails_when_a_requirement_cannot_be_installed() {
    require_python_venv();
    let t = TempDir::new("python-fail");
    let (app, cache) = (t.dir("app"), t.dir("cache"));
    write(&app.join("requirements.txt"), "dyno-no-such-package==1.0\n");
    let env = env_dir(&t, "env", &[("PIP_NO_INDEX", "1")]);
    let run = compile(&t, "python", &app, &cache, &env);
    assert_eq!(
        run.code,
        Some(1),
        "compile succeeded without its requirement:\n{}",
        run.show()
    );
    assert!(
        run.stdout.contains("dyno-no-such-package"),
        "pip's reason is not shown:\n{}",
        run.show()
    );
    assert!(
        run.stdout
            .trim_end()
            .ends_with(" !     pip install failed; see the lines above"),
        "no failure line at the end:\n{}",
        run.show()
    );
    assert!(
        !cache.join("python/key").exists(),
        "a failed build was cached"
    );
}

#[test]
fn python_compile_without_requirements_installs_the_project_editable() {
    require_python_venv();
    let t = TempDir::new("python-project");
    let (app, cache) = (t.dir("app"), t.dir("cache"));
    // The app is itself the package: setup.py at its root, no requirements.txt.
    package_source(&app, "from the project");
    let env = env_dir(&t, "env", &[("PIP_NO_INDEX", "1")]);

    for round in ["first", "second"] {
        let run = compile(&t, "python", &app, &cache, &env);
        run.assert_ok(&format!("the {round} compile"));
        run.assert_has("-----> No requirements.txt: installing the app's project, afresh each build (not cached)");
        run.assert_has("-----> Installing the app's project (pip install -e .) with pip");
        run.assert_lacks("reusing the cached virtualenv");
    }
    let import = venv_python(&t, &app, "import mypkg; print(mypkg.GREETING)");
    import.assert_ok("import the app's own package");
    assert_eq!(import.stdout, "from the project\n");
}
