//! What a push costs without dyno: the same commit pushed to plain bare repositories, (1)
//! over the same transport as the daemon's, `git http-backend` behind HTTPS on the lab's
//! loopback, with the same certificate and the same Basic challenge (git first asks without
//! its credential, then again with it), and (2) to a path (`git receive-pack` run locally,
//! no HTTP at all). No hook runs in either: the difference to a push to the daemon is the
//! build, the release and the restart.
//!
//! The HTTPS server is a small Python script (python3 is needed for the app anyway): one
//! thread per connection, keep-alive, the CGI's answer sent whole with its length (a push of
//! one small commit answers a few hundred bytes; the daemon streams it, which a push without a
//! hook cannot tell apart). Also the certificates: a throwaway CA and a server certificate
//! for `127.0.0.1`, which the daemon's `--api-tls-cert` and the anchor both serve.

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use dyno_net::ns::Netns;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};

use crate::router::procs::Proc;

/// The certificate files of a run.
pub(super) struct Pki {
    pub(super) ca: PathBuf,
    pub(super) cert: PathBuf,
    pub(super) key: PathBuf,
}

impl Pki {
    /// Where [`make_pki`] writes them in `dir`.
    pub(super) fn in_dir(dir: &Path) -> Pki {
        Pki {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// A CA and a certificate for `127.0.0.1` signed by it, written to `dir`.
pub(super) fn make_pki(dir: &Path) -> Result<Pki, String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| format!("certificates: {what}: {e}");
    std::fs::create_dir_all(dir).map_err(|e| fail(&dir.display().to_string(), &e))?;
    let mut ca_params = CertificateParams::default();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "dyno bench build CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate().map_err(|e| fail("CA key", &e))?;
    let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| fail("CA", &e))?;
    let issuer = Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().map_err(|e| fail("key", &e))?;
    let params = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .map_err(|e| fail("certificate", &e))?;
    let cert = params
        .signed_by(&key, &issuer)
        .map_err(|e| fail("certificate", &e))?;
    let pki = Pki::in_dir(dir);
    for (path, text) in [
        (&pki.ca, ca_cert.pem()),
        (&pki.cert, format!("{}{}", cert.pem(), ca_cert.pem())),
    ] {
        std::fs::write(path, text).map_err(|e| fail(&path.display().to_string(), &e))?;
    }
    write_private(&pki.key, &key.serialize_pem())?;
    Ok(pki)
}

/// Writes a secret (a key, a token) readable by its owner only.
pub(super) fn write_private(path: &Path, text: &str) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// `git http-backend` over HTTPS for the repositories under a root, stopped on drop.
pub(super) struct HttpBackend {
    _proc: Proc,
    pub(super) addr: SocketAddr,
}

impl HttpBackend {
    /// Starts the server in `netns` on `addr`, serving `root`'s repositories to whoever sends
    /// `token` as the Basic password; returns once it accepts connections (5 s at most).
    pub(super) fn start(
        netns: &Netns,
        addr: SocketAddr,
        root: &Path,
        pki: &Pki,
        token: &str,
    ) -> Result<HttpBackend, String> {
        let script = root.join("http-backend.py");
        std::fs::write(&script, SERVER).map_err(|e| format!("{}: {e}", script.display()))?;
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(&script)
            .arg(root)
            .arg(addr.port().to_string())
            .arg(&pki.cert)
            .arg(&pki.key)
            .env("ANCHOR_TOKEN", token);
        dyno_net::ns::command_in(&mut command, netns, None).map_err(|e| e.to_string())?;
        let proc = Proc::spawn(
            "git http-backend (anchor)",
            command,
            &root.join("server.log"),
        )?;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let connected = netns
                .run(move || TcpStream::connect_timeout(&addr, Duration::from_millis(200)))
                .map_err(|e| e.to_string())?;
            if connected.is_ok() {
                return Ok(HttpBackend { _proc: proc, addr });
            }
            if Instant::now() > deadline {
                let log = std::fs::read_to_string(root.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the anchor's git http-backend does not listen on {addr}:\n{log}"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// The anchor's server: argv root, port, certificate chain, key; the token in ANCHOR_TOKEN.
const SERVER: &str = r#"import base64, os, ssl, subprocess, sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, PORT, CERT, KEY = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TOKEN = os.environ["ANCHOR_TOKEN"]


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the daemon's API
    # Head and body go out in two writes: with Nagle's algorithm the second waits for the
    # client's delayed ACK (40 ms a request).
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def do_GET(self):
        self.cgi()

    def do_POST(self):
        self.cgi()

    def body(self):
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def cgi(self):
        body = self.body()
        auth = self.headers.get("Authorization", "")
        password = ""
        if auth.startswith("Basic "):
            password = base64.b64decode(auth[6:]).decode().partition(":")[2]
        if password != TOKEN:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="anchor"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": ROOT,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": ROOT,
            "REMOTE_USER": "bench",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             stdout=subprocess.PIPE).stdout
        sep = b"\r\n\r\n" if b"\r\n\r\n" in out else b"\n\n"
        head, _, data = out.partition(sep)
        status, headers = 200, []
        for line in head.decode("latin-1").splitlines():
            name, _, value = line.partition(":")
            if name.lower() == "status":
                status = int(value.split()[0])
            elif name:
                headers.append((name, value.strip()))
        self.send_response(status)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


server = ThreadingHTTPServer(("127.0.0.1", PORT), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(CERT, KEY)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.daemon_threads = True
server.serve_forever()
"#;
