//! Git's smart HTTP on the API's TCP listeners (plain and TLS), driven by the system's `git`
//! against a platform whose repository is a bare one in a temp dir: pushes, clones, Heroku's
//! words for a wrong token and an unknown app, a hook's output reaching the pusher while the
//! hook still runs, and the hook killed when the pusher goes away.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dyno_api::server::git::GitRepository;
use dyno_api::{ApiError, App, AppName, Platform};
use tokio::task::JoinHandle;

const TOKEN: &str = "git-test-token-0123456789abcdef";
const APP: &str = "pushed-app";

/// One app, `pushed-app`, whose repository is `root/repo.git`, with hooks from `hooks/`.
struct Fake {
    root: PathBuf,
    hooks: PathBuf,
}

impl Platform for Fake {
    async fn list_apps(&self) -> Result<Vec<App>, ApiError> {
        Ok(vec![self.app(AppName::new(APP)?).await?])
    }
    async fn create_app(&self, name: AppName) -> Result<App, ApiError> {
        Err(ApiError::name_taken(name.as_str()))
    }
    async fn destroy_app(&self, name: AppName) -> Result<App, ApiError> {
        Err(ApiError::app_not_found(name.as_str()))
    }
    async fn app(&self, name: AppName) -> Result<App, ApiError> {
        if name.as_str() != APP {
            return Err(ApiError::app_not_found(name.as_str()));
        }
        Ok(App::new(
            &name,
            "id",
            Default::default(),
            std::time::UNIX_EPOCH,
        ))
    }
    async fn git_repository(&self, name: AppName) -> Result<GitRepository, ApiError> {
        self.app(name).await?;
        Ok(GitRepository {
            project_root: self.root.clone(),
            repo: "repo.git".into(),
            env: vec![
                ("GIT_CONFIG_COUNT".into(), "1".into()),
                ("GIT_CONFIG_KEY_0".into(), "core.hooksPath".into()),
                (
                    "GIT_CONFIG_VALUE_0".into(),
                    self.hooks.display().to_string(),
                ),
            ],
        })
    }
}

struct Setup {
    dir: PathBuf,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Setup {
    fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// `git ARGS` in the work tree, with nothing of the host's git config.
    fn git(&self, args: &[&str]) -> Command {
        let mut c = Command::new("git");
        c.args(args)
            .current_dir(self.work())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_AUTHOR_NAME", "T")
            .env("GIT_AUTHOR_EMAIL", "t@example.com")
            .env("GIT_COMMITTER_NAME", "T")
            .env("GIT_COMMITTER_EMAIL", "t@example.com");
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.git(args)
            .output()
            .expect("run git (apt-get install git)")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        let text = both(&out);
        assert!(out.status.success(), "git {args:?}:\n{text}");
        text
    }

    fn url(&self, scheme: &str, password: &str, app: &str) -> String {
        format!("{scheme}://heroku:{password}@{}/{app}.git", self.addr)
    }

    fn hook(&self, script: &str) {
        let path = self.dir.join("hooks/pre-receive");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

fn both(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A bare repository, a work tree with one commit on `main`, and the API on 127.0.0.1 (TLS
/// with a certificate for it when `tls` holds a CA's file to write).
async fn setup(tag: &str, tls: bool) -> Setup {
    let dir = std::env::temp_dir().join(format!("dyno-api-git-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("hooks")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    let root = dir.join("root");
    let init = Command::new("git")
        .args(["init", "--bare", "--quiet", "--initial-branch=main"])
        .arg(root.join("repo.git"))
        .status()
        .expect("run git (apt-get install git)");
    assert!(init.success());
    let fake = Arc::new(Fake {
        root,
        hooks: dir.join("hooks"),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = if tls {
        let acceptor = test_tls(&dir);
        tokio::spawn(async move {
            dyno_api::server::serve_tls(listener, acceptor, TOKEN, fake)
                .await
                .unwrap()
        })
    } else {
        tokio::spawn(async move { dyno_api::serve_tcp(listener, TOKEN, fake).await.unwrap() })
    };
    let s = Setup { dir, addr, task };
    s.ok(&["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(s.work().join("Procfile"), "web: ./serve\n").unwrap();
    s.ok(&["add", "."]);
    s.ok(&["commit", "--quiet", "-m", "first"]);
    s
}

/// A CA (`dir/ca.pem`) and a certificate it signed for 127.0.0.1.
fn test_tls(dir: &Path) -> tokio_rustls::TlsAcceptor {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: a certificate whose issuer is its subject reads as self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dyno git test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "dyno git test 127.0.0.1");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let chain = vec![cert.der().clone()];
    let key = rustls_pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap();
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    dyno_api::server::http1_acceptor(config)
}

#[tokio::test(flavor = "multi_thread")]
async fn push_and_clone_with_the_token_as_password() {
    let s = setup("push", false).await;
    let url = s.url("http", TOKEN, APP);
    let out = tokio::task::spawn_blocking({
        let s_url = url.clone();
        let cmd = s.git(&["push", &s_url, "main"]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(out.0, "push:\n{}", out.1);
    assert!(
        out.1.contains("* [new branch]      main -> main"),
        "{}",
        out.1
    );
    // Again: nothing to send.
    let out = tokio::task::spawn_blocking({
        let cmd = s.git(&["push", &url, "main"]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(out.1.contains("Everything up-to-date"), "{}", out.1);
    // A clone (upload-pack, protocol v2) gets the commit back.
    let clone = s.dir.join("clone");
    let out = tokio::task::spawn_blocking({
        let cmd = s.git(&["clone", "--quiet", &url, clone.to_str().unwrap()]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(out.0, "clone:\n{}", out.1);
    assert_eq!(
        std::fs::read_to_string(clone.join("Procfile")).unwrap(),
        "web: ./serve\n"
    );
}

fn run_cmd(mut cmd: Command) -> (bool, String) {
    let out = cmd.output().expect("run git");
    (out.status.success(), both(&out))
}

#[tokio::test(flavor = "multi_thread")]
async fn wrong_token_and_unknown_app_in_herokus_words() {
    let s = setup("words", false).await;
    let (ok, out) = tokio::task::spawn_blocking({
        let cmd = s.git(&["push", &s.url("http", "not-the-token", APP), "main"]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        out.contains("remote: !\tDo not authenticate with username and password using git."),
        "{out}"
    );
    assert!(out.contains("fatal: Authentication failed for"), "{out}");
    let (ok, out) = tokio::task::spawn_blocking({
        let cmd = s.git(&["push", &s.url("http", TOKEN, "no-such-app"), "main"]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(
        out.contains("remote: !\tNo such app as no-such-app."),
        "{out}"
    );
    assert!(out.contains("fatal: repository '"), "{out}");
    assert!(out.contains("not found"), "{out}");
    // Without any credential: git is told to ask for one (and with prompts off, cannot).
    let (ok, out) = tokio::task::spawn_blocking({
        let cmd = s.git(&["ls-remote", &format!("http://{}/{APP}.git", s.addr)]);
        move || run_cmd(cmd)
    })
    .await
    .unwrap();
    assert!(!ok);
    assert!(out.contains("could not read Username"), "{out}");
}

/// The hook's first line reaches the pusher while the hook waits for the test to see it.
#[tokio::test(flavor = "multi_thread")]
async fn hook_output_streams_to_the_pusher() {
    let s = setup("stream", false).await;
    let go = s.dir.join("go");
    s.hook(&format!(
        "echo 'hook says hi'\n\
         i=0; while [ ! -e {go} ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done\n\
         echo 'hook done'",
        go = go.display()
    ));
    let mut child = s
        .git(&["push", "--progress", &s.url("http", TOKEN, APP), "main"])
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let seen = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut stderr = stderr;
        let mut all = Vec::new();
        let mut buf = [0u8; 4096];
        let started = Instant::now();
        // Read until the hook's first line is there, then let the hook go on.
        while !String::from_utf8_lossy(&all).contains("remote: hook says hi") {
            let n = stderr.read(&mut buf).unwrap();
            assert!(
                n > 0,
                "push ended early:\n{}",
                String::from_utf8_lossy(&all)
            );
            all.extend_from_slice(&buf[..n]);
        }
        let waited = started.elapsed();
        std::fs::write(&go, "").unwrap();
        stderr.read_to_end(&mut all).unwrap();
        (waited, String::from_utf8_lossy(&all).into_owned())
    })
    .await
    .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", seen.1);
    assert!(seen.0 < Duration::from_secs(15), "{:?}", seen.0);
    assert!(seen.1.contains("remote: hook done"), "{}", seen.1);
}

/// A pusher that goes away takes the CGI, receive-pack and the hook with it.
#[tokio::test(flavor = "multi_thread")]
async fn a_pusher_that_goes_away_ends_the_hook() {
    let s = setup("gone", false).await;
    let pid_file = s.dir.join("hook.pid");
    s.hook(&format!("echo $$ > {}\nsleep 60", pid_file.display()));
    let mut cmd = s.git(&["push", &s.url("http", TOKEN, APP), "main"]);
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let hook_pid = wait_for(Duration::from_secs(20), || {
        std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
    });
    // The whole push (git and git-remote-http) goes.
    let group = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process_group(group, rustix::process::Signal::KILL).unwrap();
    let _ = child.wait();
    wait_for(Duration::from_secs(10), || {
        (!Path::new(&format!("/proc/{hook_pid}")).exists()).then_some(())
    });
}

fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn over_tls_with_a_test_ca() {
    let s = setup("tls", true).await;
    let mut cmd = s.git(&["push", &s.url("https", TOKEN, APP), "main"]);
    cmd.env("GIT_SSL_CAINFO", s.dir.join("ca.pem"));
    let (ok, out) = tokio::task::spawn_blocking(move || run_cmd(cmd))
        .await
        .unwrap();
    assert!(ok, "{out}");
    // Without the CA, git refuses the certificate.
    let cmd = s.git(&["ls-remote", &s.url("https", TOKEN, APP)]);
    let (ok, out) = tokio::task::spawn_blocking(move || run_cmd(cmd))
        .await
        .unwrap();
    assert!(!ok);
    assert!(out.contains("certificate"), "{out}");
    // Over TLS, an app's git URL is https on the host the client reached.
    let app: serde_json::Value = tokio::task::spawn_blocking({
        let (addr, ca) = (s.addr, s.dir.join("ca.pem"));
        move || {
            let out = Command::new("curl")
                .args(["-sS", "--cacert"])
                .arg(ca)
                .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
                .arg(format!("https://{addr}/apps/{APP}"))
                .output()
                .expect("run curl (apt-get install curl)");
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", both(&out)))
        }
    })
    .await
    .unwrap();
    assert_eq!(
        app["git_url"],
        format!("https://{}/{APP}.git", s.addr).as_str()
    );
}
