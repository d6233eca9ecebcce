//! Test support for end-to-end tests: the real `badge` binary started on port 0 in a
//! temporary data dir, the real kubectl, and a raw HTTPS client for what kubectl cannot
//! send (anonymous requests, odd content types, oversized bodies).

#![warn(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use badge_client::{Client, Identity, Kubeconfig};

pub mod etcd;
pub mod linearizability;

/// The real kubectl: `$BADGE_KUBECTL`, else the copy `scripts/install-kubectl.sh` caches.
pub fn kubectl_path() -> PathBuf {
    if let Ok(p) = std::env::var("BADGE_KUBECTL") {
        return PathBuf::from(p);
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let cached = PathBuf::from(home).join(".cache/badge/kubectl");
    assert!(
        cached.exists(),
        "kubectl not found at {}: run scripts/install-kubectl.sh",
        cached.display()
    );
    cached
}

/// A running badge server.
pub struct TestServer {
    binary: PathBuf,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// The port the server reported serving on.
    pub port: u16,
    /// Every stderr line the server wrote, across restarts.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    extra_args: Vec<String>,
    /// The port to listen on instead of an ephemeral one.
    fixed_port: Option<u16>,
}

impl TestServer {
    /// Starts `binary server` in a new data dir.
    pub fn start(binary: &str) -> TestServer {
        TestServer::start_with(binary, &[])
    }

    /// Starts `binary server` in a new data dir with further flags `args`.
    pub fn start_with(binary: &str, args: &[&str]) -> TestServer {
        TestServer::start_in(binary, args, tempfile::tempdir().unwrap())
    }

    fn start_in(binary: &str, args: &[&str], dir: tempfile::TempDir) -> TestServer {
        // Private, as badge requires of a data dir (a new temporary directory follows the umask).
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
        let mut server = TestServer {
            binary: PathBuf::from(binary),
            dir,
            child: None,
            port: 0,
            log: Default::default(),
            extra_args: args.iter().map(|s| s.to_string()).collect(),
            fixed_port: None,
        };
        server.launch();
        server
    }

    /// Starts another server that shares `peer`'s certificates (CA, serving and admin
    /// certificates), as servers behind one address must: the peer's admin kubeconfig
    /// works against both.
    pub fn start_sharing_pki(binary: &str, args: &[&str], peer: &TestServer) -> TestServer {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(&peer.dir.path().join("pki"), &dir.path().join("pki"));
        TestServer::start_in(binary, args, dir)
    }

    /// The process id, while running.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's data dir.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The admin kubeconfig the server wrote, with a client certificate in `system:masters`.
    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    fn launch(&mut self) {
        let mut child = Command::new(&self.binary)
            .arg("server")
            .arg("--data-dir")
            .arg(self.dir.path())
            .arg("--secure-port")
            .arg(self.fixed_port.unwrap_or(0).to_string())
            .args(&self.extra_args)
            .env("BADGE_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting badge");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = self.log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("serving securely on") {
                    let port = line.rsplit(':').next().and_then(|p| p.trim().parse::<u16>().ok());
                    let _ = tx.send(port);
                }
                log.lock().unwrap().push(line);
            }
        });
        // A bound for a hang, generous for a loaded machine; a server that exits ends the
        // wait at once (the reader thread drops the sender).
        let port = rx.recv_timeout(Duration::from_secs(90)).ok().flatten();
        self.child = Some(child);
        self.port = port.unwrap_or_else(|| {
            panic!(
                "badge did not report its port; log:\n{}",
                self.log.lock().unwrap().join("\n")
            )
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            // Ready, and the controllers have made the default ServiceAccount pods need.
            let ready = self
                .request("GET", "/readyz", None, &[], Credential::Anonymous)
                .is_ok_and(|r| r.status == 200);
            let path = "/api/v1/namespaces/default/serviceaccounts/default";
            if ready
                && self
                    .request("GET", path, None, &[], Credential::Admin)
                    .is_ok_and(|r| r.status == 200)
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("badge did not become ready");
    }

    /// Sends SIGTERM and waits; returns the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("badge did not stop after SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same data dir (a new port).
    pub fn restart(&mut self) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(status.success(), "badge exited with {status}");
        }
        self.launch();
    }

    /// Starts the stopped (or killed) server again on the same data dir and the same port,
    /// so clients holding its URL reach it again.
    pub fn start_on_same_port(&mut self) {
        assert!(self.child.is_none(), "the server is still running");
        let port = self.port;
        self.fixed_port = Some(port);
        self.launch();
        assert_eq!(self.port, port, "the server came back on another port");
    }

    /// Stops the server if running and starts it again on the same data dir with other
    /// flags.
    pub fn restart_with(&mut self, args: &[&str]) {
        if self.child.is_some() {
            let status = self.stop();
            assert!(status.success(), "badge exited with {status}");
        }
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.launch();
    }

    /// Whether a line the server logged (since it was first started) contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// Runs kubectl with the admin kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_with_stdin(args, None)
    }

    /// The admin kubeconfig without the client certificate: the server and its CA only, for
    /// requests whose credential is a `--token` (a client certificate would win over it, as
    /// in kube-apiserver).
    pub fn credential_free_kubeconfig(&self) -> PathBuf {
        let path = self.dir.path().join("no-credential.kubeconfig");
        let admin = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let mut text: String = admin
            .lines()
            .filter(|l| !l.contains("client-certificate-data") && !l.contains("client-key-data"))
            .map(|l| format!("{l}\n"))
            .collect();
        if text.ends_with("  user:\n") {
            text.truncate(text.len() - "user:\n".len());
            text.push_str("user: {}\n");
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// Runs kubectl with `stdin` as its input; with `--token` among `args`, against a kubeconfig without the admin certificate.
    pub fn kubectl_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        let mut cmd = Command::new(kubectl_path());
        let kubeconfig = if args.contains(&"--token") {
            self.credential_free_kubeconfig()
        } else {
            self.kubeconfig()
        };
        cmd.arg("--kubeconfig")
            .arg(kubeconfig)
            .arg("--cache-dir")
            .arg(self.dir.path().join("kube-cache"));
        cmd.args(args);
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("running kubectl");
        if let Some(input) = stdin {
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        }
        child.wait_with_output().unwrap()
    }

    /// Runs kubectl and returns stdout, panicking with stderr on failure.
    pub fn kubectl_ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {args:?} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs kubectl expecting failure; returns stderr.
    pub fn kubectl_err(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {args:?} unexpectedly succeeded:\n{}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// The admin client certificate and key from the kubeconfig.
    pub fn admin_identity(&self) -> (Vec<u8>, Vec<u8>) {
        let config = Kubeconfig::load(&self.kubeconfig())
            .unwrap()
            .client_config()
            .unwrap();
        match config.identity {
            Identity::Certificate { cert_pem, key_pem } => (cert_pem, key_pem),
            _ => panic!("the admin kubeconfig has no client certificate"),
        }
    }

    fn ca_pem(&self) -> Vec<u8> {
        std::fs::read(self.dir.path().join("pki/ca.crt")).unwrap()
    }

    /// Sends one raw HTTPS request.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        credential: Credential,
    ) -> std::io::Result<RawResponse> {
        self.request_on(self.port, method, path, body, headers, credential)
    }

    /// Sends one raw HTTPS request to another port this server serves with its certificate
    /// (the console's).
    pub fn request_on(
        &self,
        port: u16,
        method: &str,
        path: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
        credential: Credential,
    ) -> std::io::Result<RawResponse> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let identity = match credential {
            Credential::Anonymous => Identity::Anonymous,
            Credential::Admin => {
                let (cert_pem, key_pem) = self.admin_identity();
                Identity::Certificate { cert_pem, key_pem }
            }
            Credential::Bearer(token) => Identity::Bearer(token),
        };
        let client = Client::new(
            &format!("https://127.0.0.1:{port}"),
            Some(&self.ca_pem()),
            identity,
        )
        .map_err(std::io::Error::other)?;
        let mut request = http::Request::builder().method(method).uri(path);
        // The serving certificate's name, as a browser or kubectl would send it.
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
            request = request.header("host", "localhost");
        }
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request
            .body(bytes::Bytes::from(body.unwrap_or_default()))
            .map_err(std::io::Error::other)?;
        let response = runtime
            .block_on(client.send(request))
            .map_err(|e| std::io::Error::other(format!("{e:#}")))?;
        Ok(RawResponse {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.into_body().to_vec(),
        })
    }
}

/// A child process killed (and reaped) when dropped, also when a test panics, so no
/// process outlives its test.
pub struct ChildGuard(pub Child);

impl ChildGuard {
    /// The exit status once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit on its own.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.exited() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Copies a directory tree (files and subdirectories), keeping file and directory modes
/// (a server refuses a pki dir others can read).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    std::fs::set_permissions(to, std::fs::metadata(from).unwrap().permissions()).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Which credential a raw request carries.
#[derive(Clone, Debug)]
pub enum Credential {
    /// No credential.
    Anonymous,
    /// The admin client certificate.
    Admin,
    /// `Authorization: Bearer` with this token.
    Bearer(String),
}

/// A raw response.
#[derive(Debug)]
pub struct RawResponse {
    /// The HTTP status code.
    pub status: u16,
    /// The response headers.
    pub headers: http::HeaderMap,
    /// The response body, undecoded.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// The first value of header `name`, or "" when absent or not text.
    pub fn header(&self, name: &str) -> &str {
        self.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
    }
}
