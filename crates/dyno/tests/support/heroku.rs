//! Heroku's own CLI (`heroku`, from npm, pinned in `.ci/run`) against a real `dyno serve` over
//! its TCP API, run in the daemon's lab namespace with `HEROKU_HOST` pointing at the API: every
//! call it makes stays on that loopback.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use dyno_net::ns;

use super::*;

pub const API_PORT: u16 = 5800;
pub const TOKEN: &str = "heroku-cli-test-token-0123456789";
pub const APP: &str = "cli-hello";

/// The `heroku` executable: `$HEROKU_CLI`, or where `.ci/run` installs it.
pub fn heroku_bin() -> PathBuf {
    let path = std::env::var_os("HEROKU_CLI")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("target/heroku-cli/node_modules/.bin/heroku"));
    assert!(
        path.exists(),
        "Heroku's CLI is not at {}: install it with \
         `npm install --prefix target/heroku-cli --no-audit --no-fund heroku@11.10.0` \
         (as .ci/run does), or set HEROKU_CLI",
        path.display()
    );
    path
}

pub struct Heroku {
    pub up: Up,
    pub bin: PathBuf,
    /// The CLI's home (its config and cache) and the API token's file; removed on drop.
    pub home: PathBuf,
    /// The API as the CLI reaches it: `http://127.0.0.1:5800`, or `https://…` (TLS).
    pub api_url: String,
}

impl Drop for Heroku {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.home);
    }
}

impl Heroku {
    pub fn start(tag: &str) -> Heroku {
        Heroku::start_with(tag, &[])
    }

    /// A daemon with `extra` flags on top of the API's.
    pub fn start_with(tag: &str, extra: &[&str]) -> Heroku {
        let home = Heroku::home_of(tag);
        Heroku::start_in(tag, home, extra, false)
    }

    /// A daemon whose API is served over TLS (`--api-tls-cert`), with a certificate for
    /// 127.0.0.1 that a test CA (`tls_ca`) signed; the CLI trusts that CA.
    pub fn start_tls(tag: &str) -> Heroku {
        let home = Heroku::home_of(tag);
        let (cert, key) = test_pki(&home);
        let extra = [
            "--api-tls-cert",
            cert.to_str().unwrap(),
            "--api-tls-key",
            key.to_str().unwrap(),
        ];
        Heroku::start_in(tag, home, &extra, true)
    }

    /// The CLI's home for `tag`, new and empty. Not in the daemon's scratch dir, which
    /// `Up::serve` makes anew.
    fn home_of(tag: &str) -> PathBuf {
        let home = std::env::temp_dir().join(format!("dyno-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&home);
        std::fs::create_dir_all(&home).unwrap();
        home
    }

    fn start_in(tag: &str, home: PathBuf, extra: &[&str], tls: bool) -> Heroku {
        let token_file = home.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let listen = format!("127.0.0.1:{API_PORT}");
        let mut args = vec![
            "--api-listen",
            &listen,
            "--api-token-file",
            token_file.to_str().unwrap(),
            "--boot-timeout",
            "20s",
            "--stop-grace",
            "3s",
        ];
        args.extend_from_slice(extra);
        let up = Up::serve(tag, &args);
        up.wait_api();
        let scheme = if tls { "https" } else { "http" };
        Heroku {
            up,
            bin: heroku_bin(),
            home,
            api_url: format!("{scheme}://127.0.0.1:{API_PORT}"),
        }
    }

    /// The test CA of [`Heroku::start_tls`] (PEM).
    pub fn tls_ca(&self) -> PathBuf {
        self.home.join("ca.pem")
    }

    /// The CAs the CLI trusts: the rendezvous' (`heroku run`), and the API's test CA when the
    /// API is TLS (Node reads one file: both go in it).
    fn node_cas(&self) -> PathBuf {
        let rendezvous = std::fs::read_to_string(self.rendezvous_ca()).unwrap_or_default();
        let api = std::fs::read_to_string(self.tls_ca()).unwrap_or_default();
        let both = self.home.join("cas.pem");
        std::fs::write(&both, format!("{rendezvous}{api}")).unwrap();
        both
    }

    /// `heroku ARGS…` with `token`: (exit code, stdout, stderr).
    pub fn run_with(&self, token: &str, args: &[&str]) -> (i32, String, String) {
        let out = self.command_with(token, args).output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `heroku ARGS…` ready to run, in the daemon's namespace.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(TOKEN, args)
    }

    pub fn command_with(&self, token: &str, args: &[&str]) -> Command {
        let api = &self.api_url;
        let mut command = Command::new(&self.bin);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &self.home)
            .env("HEROKU_HOST", api)
            // The CLI asks a second host about the account: the daemon answers it too, so
            // the token never leaves this namespace.
            .env("HEROKU_PARTICLEBOARD_URL", api)
            .env("HEROKU_API_KEY", token)
            .env("DISABLE_TELEMETRY", "true")
            .env("HEROKU_SKIP_NEW_VERSION_CHECK", "true")
            // `heroku run` attaches over TLS to the daemon's rendezvous, whose certificate its
            // own CA signed (and a TLS API's certificate is the test CA's).
            .env("NODE_EXTRA_CA_CERTS", self.node_cas())
            .env("NO_COLOR", "1")
            .env("FORCE_COLOR", "0")
            .env("COLUMNS", "200");
        ns::command_in(&mut command, self.up.lab.host.netns(), None).unwrap();
        command
    }

    /// The CA of the daemon's rendezvous certificate (`heroku run`).
    pub fn rendezvous_ca(&self) -> PathBuf {
        self.up.scratch.join("data/rendezvous/ca.pem")
    }

    /// `heroku ARGS…`, which must succeed: its stdout and stderr together.
    pub fn ok(&self, args: &[&str]) -> String {
        let (code, stdout, stderr) = self.run_with(TOKEN, args);
        assert_eq!(
            code,
            0,
            "heroku {args:?} failed:\n{stdout}\n{stderr}\n--- daemon:\n{}",
            self.up.notes()
        );
        format!("{stdout}{stderr}")
    }

    /// `heroku ARGS…`, which must fail: (exit code, stdout and stderr together).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let (code, stdout, stderr) = self.run_with(TOKEN, args);
        assert_ne!(code, 0, "heroku {args:?} should fail:\n{stdout}\n{stderr}");
        (code, format!("{stdout}{stderr}"))
    }

    pub fn dyno_json(&self, args: &[&str]) -> serde_json::Value {
        let (stdout, _) = self.up.cli_succeeds(args);
        serde_json::from_str(&stdout).unwrap()
    }

    pub fn config(&self) -> serde_json::Value {
        self.dyno_json(&["config", "-a", APP, "--json"])
    }

    /// The app's formation, read through dyno's own client on the API socket.
    pub fn formation(&self) -> Vec<dyno_api::Formation> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let api = dyno_api::ApiClient::unix(self.up.api_socket());
        runtime.block_on(api.formation(APP)).unwrap()
    }

    pub fn web_quantity(&self) -> u32 {
        self.formation()
            .iter()
            .find(|f| f.process_type == "web")
            .map_or(0, |f| f.quantity)
    }

    pub fn app_names(&self) -> Vec<String> {
        let apps = self.dyno_json(&["apps", "--json"]);
        apps.as_array()
            .unwrap()
            .iter()
            .map(|a| a["name"].as_str().unwrap().to_string())
            .collect()
    }

    pub fn wait_web_up(&self, count: usize) {
        poll_until(Duration::from_secs(40), Duration::from_millis(200), || {
            let dynos = self.dyno_json(&["ps", "-a", APP, "--json"]);
            let up = dynos
                .as_array()
                .unwrap()
                .iter()
                .filter(|d| d["type"] == "web" && d["state"] == "up")
                .count();
            (up == count)
                .then_some(())
                .ok_or(format!("{up} of {count} web dynos up: {dynos}"))
        });
    }
}

pub fn contains(out: &str, what: &str) {
    assert!(out.contains(what), "expected {what:?} in:\n{out}");
}

/// A test CA (`dir/ca.pem`) and a certificate it signed for 127.0.0.1 and localhost: the
/// chain's and the key's files.
pub fn test_pki(dir: &std::path::Path) -> (PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Names of their own: a certificate whose issuer is its subject reads as self-signed.
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dyno test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "dyno test API");
    let cert = params.signed_by(&key, &issuer).unwrap();
    let (cert_path, key_path) = (dir.join("api-cert.pem"), dir.join("api-key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key.serialize_pem()).unwrap();
    (cert_path, key_path)
}
