//! Heroku's SNI endpoints with the real `heroku` CLI against `dyno serve --router-tls-listen`
//! (privileged: run as root). Certificates are made with `openssl` in a temp dir; HTTPS is
//! checked with `openssl s_client` and `curl` in the daemon's lab namespace (loopback only).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use dyno_net::ns;
use support::heroku::*;
use support::*;

const TLS_LISTEN: &str = "127.0.0.1:8443";
const DOMAIN: &str = "www.example.com";

/// An app that answers every GET with the listener facts the router gave it.
const WEB_PY: &str = r#"
import os, socketserver
class H(socketserver.StreamRequestHandler):
    def handle(self):
        headers = {}
        self.rfile.readline()
        while True:
            line = self.rfile.readline().decode().strip()
            if not line:
                break
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        body = "proto=%s port=%s host=%s\n" % (
            headers.get("x-forwarded-proto"), headers.get("x-forwarded-port"), headers.get("host"))
        self.wfile.write(("HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
                          % (len(body), body)).encode())
class S(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
S(("0.0.0.0", int(os.environ["PORT"])), H).serve_forever()
"#;

/// A scratch dir of certificates, removed on drop (also when the test fails).
struct Pki(PathBuf);

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Pki {
    fn new(tag: &str) -> Pki {
        let dir =
            std::env::temp_dir().join(format!("dyno-test-certs-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let pki = Pki(dir);
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-subj",
            "/CN=dyno test CA",
            "-days",
            "2",
        ]);
        pki
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }

    fn openssl(&self, args: &[&str]) -> String {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.0)
            .output()
            .expect("run openssl (apt-get install openssl)");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A key and a certificate for `names` signed by the test CA: `<stem>.key`, `<stem>.crt`.
    fn issue(&self, stem: &str, names: &[&str]) {
        let (key, csr, crt) = (
            format!("{stem}.key"),
            format!("{stem}.csr"),
            format!("{stem}.crt"),
        );
        let cn = format!("/CN={}", names[0]);
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &cn,
        ]);
        let san: Vec<String> = names.iter().map(|n| format!("DNS:{n}")).collect();
        std::fs::write(
            self.0.join(format!("{stem}.ext")),
            format!("subjectAltName={}\n", san.join(",")),
        )
        .unwrap();
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &format!("{stem}.ext"),
            "-out",
            &crt,
        ]);
    }

    /// `serial=…` of a certificate file, as openssl prints it.
    fn serial(&self, crt: &str) -> String {
        self.openssl(&["x509", "-in", crt, "-noout", "-serial"])
            .trim()
            .to_owned()
    }

    /// A self-signed certificate for `name` that expired in 2020 (openssl 3.0 cannot date one
    /// in the past): `<stem>.key`, `<stem>.crt`.
    fn expired(&self, stem: &str, name: &str) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
        params.not_before = rcgen::date_time_ymd(2019, 1, 1);
        params.not_after = rcgen::date_time_ymd(2020, 1, 1);
        let cert = params.self_signed(&key).unwrap();
        std::fs::write(self.0.join(format!("{stem}.crt")), cert.pem()).unwrap();
        std::fs::write(self.0.join(format!("{stem}.key")), key.serialize_pem()).unwrap();
    }
}

/// A command run in the daemon's lab namespace (where the router listens).
fn in_lab(h: &Heroku, program: &str, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).stdin(Stdio::null());
    ns::command_in(&mut command, h.up.lab.host.netns(), None).unwrap();
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("run {program}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// The certificate the router's TLS listener presents for `sni`: `serial=…`, or `None` when
/// the handshake fails.
fn served_serial(h: &Heroku, pki: &Pki, sni: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect {TLS_LISTEN} -servername {sni} -CAfile {ca} </dev/null \
         2>/dev/null | openssl x509 -noout -serial",
        ca = pki.path("ca.pem")
    );
    let (ok, out) = in_lab(h, "sh", &["-c", &script]);
    ok.then(|| out.trim().to_owned())
        .filter(|s| s.starts_with("serial="))
}

/// `curl https://<host>:8443/` resolved to the router, verified against the test CA.
fn https_get(h: &Heroku, pki: &Pki, host: &str, extra: &[&str]) -> (bool, String) {
    let resolve = format!("{host}:8443:127.0.0.1");
    let url = format!("https://{host}:8443/");
    let ca = pki.path("ca.pem");
    let mut args = vec![
        "-sS",
        "--max-time",
        "10",
        "--resolve",
        &resolve,
        "--cacert",
        &ca,
    ];
    args.extend_from_slice(extra);
    args.push(&url);
    in_lab(h, "curl", &args)
}

/// `heroku certs:add` answering its domain prompt with Enter (nothing picked): the router
/// serves a certificate by the names it covers, so no association is needed.
fn certs_add(h: &Heroku, crt: &str, key: &str) -> (bool, String) {
    certs_add_answering(h, crt, key, b"\n")
}

/// `heroku certs:add` with `keys` typed at its domain prompt.
fn certs_add_answering(h: &Heroku, crt: &str, key: &str, keys: &[u8]) -> (bool, String) {
    let mut command = h.command(&["certs:add", crt, key, "-a", APP]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        let _ = stdin.write_all(keys);
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write_app(dir: &Path) {
    std::fs::write(dir.join("web.py"), WEB_PY).unwrap();
}

#[test]
fn heroku_certs_serve_https_by_sni_and_bad_certificates_change_nothing() {
    require_root();
    let h = Heroku::start_with("heroku-certs", &["--router-tls-listen", TLS_LISTEN]);
    let app = app_dir("heroku-certs", "web: python3 web.py\n");
    write_app(&app);
    h.ok(&["apps:create", APP]);
    h.up.cli_succeeds(&["deploy", app.to_str().unwrap(), "-a", APP]);
    h.wait_web_up(1);
    h.ok(&["domains:add", DOMAIN, "-a", APP]);

    let pki = Pki::new("sni");
    pki.issue("www", &[DOMAIN]);
    pki.issue("www2", &[DOMAIN, "api.example.com"]);
    pki.issue("stray", &["stray.example.com"]);
    pki.issue("other", &["api.other-app.test"]);
    pki.expired("old", DOMAIN);
    std::fs::write(pki.0.join("garbage.crt"), "this is not PEM\n").unwrap();

    // Bad input: Heroku-shaped errors, and nothing changes.
    let none = "has no SSL certificates";
    contains(&h.ok(&["certs", "-a", APP]), none);
    let (ok, out) = certs_add(&h, &pki.path("www.crt"), &pki.path("stray.key"));
    assert!(!ok, "{out}");
    contains(&out, "The private key does not match the certificate");
    let (ok, out) = certs_add(&h, &pki.path("garbage.crt"), &pki.path("www.key"));
    assert!(!ok, "{out}");
    contains(&out, "No certificate found in certificate_chain");
    let (ok, out) = certs_add(&h, &pki.path("old.crt"), &pki.path("old.key"));
    assert!(!ok, "{out}");
    contains(&out, "The certificate expired at");
    h.ok(&["apps:create", "other-app"]);
    h.ok(&["domains:add", "api.other-app.test", "-a", "other-app"]);
    let (ok, out) = certs_add(&h, &pki.path("other.crt"), &pki.path("other.key"));
    assert!(!ok, "{out}");
    contains(&out, "api.other-app.test is a domain of another app");
    contains(&h.ok(&["certs", "-a", APP]), none);
    // Without a certificate and without a default one, the TLS listener refuses the handshake.
    assert_eq!(served_serial(&h, &pki, DOMAIN), None);

    // certs:add: listed, described, served by SNI.
    let (ok, out) = certs_add(&h, &pki.path("www.crt"), &pki.path("www.key"));
    assert!(ok, "{out}\n{}", h.up.notes());
    contains(&out, "Certificate details:");
    contains(&out, DOMAIN);
    let list = h.ok(&["certs", "-a", APP]);
    contains(&list, "sni-");
    contains(&list, DOMAIN);
    let name = list
        .split_whitespace()
        .find(|w| w.starts_with("sni-"))
        .unwrap()
        .to_owned();
    let info = h.ok(&["certs:info", "-a", APP]);
    contains(&info, "Common Name(s):");
    contains(&info, "Subject:");
    contains(&info, "CN=www.example.com");
    contains(&info, "Issuer:");
    contains(&info, "CN=dyno test CA");
    contains(&info, "SSL certificate is not trusted.");
    let domains = h.ok(&["domains", "-a", APP]);
    contains(&domains, &name);
    // The endpoint lists the custom domains it serves (by id; the CLI reads each one).
    let shown = h.ok(&["certs:info", "-a", APP, "--show-domains"]);
    contains(&shown, "Domain(s):");
    contains(&shown, DOMAIN);

    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www.crt").as_str())
    );
    let (ok, body) = https_get(&h, &pki, DOMAIN, &["--http1.1"]);
    assert!(ok, "{body}");
    contains(&body, "proto=https port=8443 host=www.example.com");
    let (ok, body) = https_get(&h, &pki, DOMAIN, &["--http2", "-w", "http=%{http_version}"]);
    assert!(ok, "{body}");
    contains(&body, "proto=https port=8443");
    contains(&body, "http=2");
    // The plain listener still says http and its own port.
    let plain = h.up.get_via_router(DOMAIN, "/");
    contains(&plain, "proto=http port=8080 host=www.example.com");
    // An unknown name: no certificate covers it and there is no default: a clean failure,
    // and the listener goes on serving.
    let (ok, out) = https_get(&h, &pki, "unknown.example.com", &[]);
    assert!(!ok, "{out}");
    assert_eq!(served_serial(&h, &pki, "unknown.example.com"), None);
    assert!(https_get(&h, &pki, DOMAIN, &[]).0);

    // certs:update: the new certificate is served from the next handshake on.
    h.ok(&[
        "certs:update",
        &pki.path("www2.crt"),
        &pki.path("www2.key"),
        "-a",
        APP,
        "--confirm",
        APP,
    ]);
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www2.crt").as_str())
    );
    let (_, bad_update) = h.fails(&[
        "certs:update",
        &pki.path("www.crt"),
        &pki.path("stray.key"),
        "-a",
        APP,
        "--confirm",
        APP,
    ]);
    contains(&bad_update, "does not match");
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www2.crt").as_str())
    );

    // certs:remove: no longer served.
    h.ok(&["certs:remove", "-a", APP, "--confirm", APP]);
    contains(&h.ok(&["certs", "-a", APP]), none);
    assert_eq!(served_serial(&h, &pki, DOMAIN), None);

    // Picking the domain at certs:add's prompt (space, Enter) associates it: the CLI's
    // PATCH of the domain names the endpoint that serves it, which is accepted.
    let (ok, out) = certs_add_answering(&h, &pki.path("www.crt"), &pki.path("www.key"), b" \n");
    assert!(ok, "{out}\n{}", h.up.notes());
    contains(&out, "Almost done! Which of these domains");
    contains(&out, "Select domains www.example.com");
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www.crt").as_str())
    );

    // `domains:add --cert`: refused for a name the certificate does not cover, nothing added.
    let list = h.ok(&["certs", "-a", APP]);
    let name = list
        .split_whitespace()
        .find(|w| w.starts_with("sni-"))
        .unwrap()
        .to_owned();
    let (_, out) = h.fails(&["domains:add", "api.example.com", "--cert", &name, "-a", APP]);
    contains(
        &out,
        &format!("SSL certificate {name} does not cover api.example.com"),
    );
    assert!(!h.ok(&["domains", "-a", APP]).contains("api.example.com"));

    // apps:rename: the certificate goes along (the router's table is keyed by the name).
    let out = h
        .command(&["apps:rename", "certs-renamed", "-a", APP])
        .current_dir(&h.home)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}\n{}", h.up.notes());
    contains(&h.ok(&["certs", "-a", "certs-renamed"]), DOMAIN);
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www.crt").as_str())
    );
}

#[test]
fn with_a_default_certificate_unknown_and_missing_names_get_it() {
    require_root();
    let pki = Pki::new("default");
    pki.issue("default", &["router.example.test"]);
    let (crt, key) = (pki.path("default.crt"), pki.path("default.key"));
    let h = Heroku::start_with(
        "heroku-certs-default",
        &[
            "--router-tls-listen",
            TLS_LISTEN,
            "--router-tls-cert",
            &crt,
            "--router-tls-key",
            &key,
        ],
    );
    h.ok(&["apps:create", APP]);
    h.ok(&["domains:add", DOMAIN, "-a", APP]);
    let default = pki.serial("default.crt");
    assert_eq!(
        served_serial(&h, &pki, "unknown.example.com").as_deref(),
        Some(default.as_str())
    );
    // A name of the app that no certificate of it covers gets the default too.
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(default.as_str())
    );
    // No SNI at all (a client that connects by address).
    let script = format!(
        "openssl s_client -connect {TLS_LISTEN} -noservername </dev/null 2>/dev/null \
         | openssl x509 -noout -serial"
    );
    let (ok, out) = in_lab(&h, "sh", &["-c", &script]);
    assert!(ok, "{out}");
    assert_eq!(out.trim(), default);
    // Once the app has its certificate, its name gets that one.
    pki.issue("www", &[DOMAIN]);
    let (ok, out) = certs_add(&h, &pki.path("www.crt"), &pki.path("www.key"));
    assert!(ok, "{out}");
    assert_eq!(
        served_serial(&h, &pki, DOMAIN).as_deref(),
        Some(pki.serial("www.crt").as_str())
    );
}
