//! A real etcd cluster for tests: `etcd` (Debian's `etcd-server`, or `$BADGE_ETCD`) with
//! one or more members on loopback ports, in a temporary directory.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The etcd binary: `$BADGE_ETCD`, else `etcd` on the PATH.
pub fn etcd_path() -> PathBuf {
    if let Ok(path) = std::env::var("BADGE_ETCD") {
        return PathBuf::from(path);
    }
    for dir in std::env::var("PATH").unwrap_or_default().split(':') {
        let candidate = PathBuf::from(dir).join("etcd");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("etcd not found on the PATH: install Debian's etcd-server package or set BADGE_ETCD");
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    /// Plain HTTP `/health` and `/metrics`, whatever the client port speaks.
    metrics_port: u16,
    child: Option<Child>,
    /// Sockets bound, not listening, to the ports of a killed member: no other process
    /// takes them (as a listener or as a connection's source port) before it restarts on
    /// them, and connections to them are still refused as to a dead member's.
    held_ports: Vec<tokio::net::TcpSocket>,
}

/// A running etcd cluster; killed when dropped.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    token: String,
    /// Client TLS with client-certificate authentication, when started with [`EtcdCluster::start_tls`].
    tls: Option<EtcdTls>,
    /// Further flags every member starts with.
    extra_args: Vec<String>,
}

/// Certificate files of a TLS cluster: a CA, the members' serving certificate for
/// 127.0.0.1, and a client certificate the members accept.
pub struct EtcdTls {
    /// PEM of the CA that signed every certificate below.
    pub ca_file: PathBuf,
    /// PEM serving certificate of the members, for 127.0.0.1.
    pub server_cert: PathBuf,
    /// PEM key of the serving certificate.
    pub server_key: PathBuf,
    /// PEM client certificate the members accept.
    pub client_cert: PathBuf,
    /// PEM key of the client certificate.
    pub client_key: PathBuf,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Binds `port` on loopback without listening. Without SO_REUSEADDR the port is closed
/// to every other bind, but the bind fails while the dead member's connections linger in
/// TIME_WAIT; then it is bound with SO_REUSEADDR, which still keeps connections from
/// taking it as their source port.
fn hold_port(port: u16) -> std::io::Result<tokio::net::TcpSocket> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let exclusive = tokio::net::TcpSocket::new_v4()?;
    if exclusive.bind(address).is_ok() {
        return Ok(exclusive);
    }
    let shared = tokio::net::TcpSocket::new_v4()?;
    shared.set_reuseaddr(true)?;
    shared.bind(address)?;
    Ok(shared)
}

impl EtcdCluster {
    /// Starts `size` members and waits until the cluster has a leader.
    pub fn start(size: usize) -> EtcdCluster {
        EtcdCluster::start_with(size, false, &[])
    }

    /// Starts `size` members with further etcd flags (such as `--quota-backend-bytes`).
    pub fn start_with_args(size: usize, args: &[&str]) -> EtcdCluster {
        EtcdCluster::start_with(size, false, args)
    }

    /// Starts `size` members serving clients over TLS and requiring client certificates.
    pub fn start_tls(size: usize) -> EtcdCluster {
        EtcdCluster::start_with(size, true, &[])
    }

    /// The certificate files of a TLS cluster.
    pub fn tls(&self) -> Option<&EtcdTls> {
        self.tls.as_ref()
    }

    fn start_with(size: usize, tls: bool, args: &[&str]) -> EtcdCluster {
        // A port chosen free can be taken by another process before etcd binds it; then
        // the cluster starts again on new ports.
        for _ in 0..5 {
            let mut cluster = EtcdCluster::launch_new(size, tls, args);
            if cluster.become_healthy(Duration::from_secs(30)) {
                return cluster;
            }
            if !cluster.logs().contains("address already in use") {
                panic!("etcd did not become healthy; logs:\n{}", cluster.logs());
            }
        }
        panic!("etcd could not bind its ports in five attempts");
    }

    fn launch_new(size: usize, tls: bool, args: &[&str]) -> EtcdCluster {
        let members = (0..size)
            .map(|i| Member {
                name: format!("m{i}"),
                client_port: free_port(),
                peer_port: free_port(),
                metrics_port: free_port(),
                child: None,
                held_ports: Vec::new(),
            })
            .collect();
        let dir = tempfile::tempdir().expect("temporary directory");
        let token = format!("badge-test-{}", dir.path().display()).replace('/', "-");
        let tls = tls.then(|| {
            let pki_dir = dir.path().join("pki");
            badge_pki::Pki::load_or_create(&pki_dir, &["127.0.0.1".to_string()]).expect("test certificates");
            EtcdTls {
                ca_file: pki_dir.join(badge_pki::CA_CERT_FILE),
                server_cert: pki_dir.join(badge_pki::APISERVER_CERT_FILE),
                server_key: pki_dir.join(badge_pki::APISERVER_KEY_FILE),
                client_cert: pki_dir.join(badge_pki::ADMIN_CERT_FILE),
                client_key: pki_dir.join(badge_pki::ADMIN_KEY_FILE),
            }
        });
        let mut cluster = EtcdCluster {
            dir,
            members,
            token,
            tls,
            extra_args: args.iter().map(|a| a.to_string()).collect(),
        };
        for i in 0..size {
            cluster.launch(i);
        }
        cluster
    }

    /// Every member's log, one after another.
    fn logs(&self) -> String {
        let logs: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                std::fs::read_to_string(self.dir.path().join(format!("{}.log", m.name))).unwrap_or_default()
            })
            .collect();
        logs.join("\n---\n")
    }

    /// Waits until every running member is healthy; false after `timeout`, or at once when
    /// a member has exited.
    fn become_healthy(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let mut running = Vec::new();
            for (i, member) in self.members.iter_mut().enumerate() {
                if let Some(child) = &mut member.child {
                    if !matches!(child.try_wait(), Ok(None)) {
                        return false;
                    }
                    running.push(i);
                }
            }
            if running.iter().all(|&i| self.member_healthy(i)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn launch(&mut self, index: usize) {
        let initial_cluster = self.initial_cluster();
        let member = &self.members[index];
        let data = self.dir.path().join(&member.name);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(format!("{}.log", member.name)))
            .expect("etcd log file");
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let client = format!("{scheme}://127.0.0.1:{}", member.client_port);
        let peer = format!("http://127.0.0.1:{}", member.peer_port);
        let mut command = Command::new(etcd_path());
        if let Some(tls) = &self.tls {
            command
                .arg("--cert-file")
                .arg(&tls.server_cert)
                .arg("--key-file")
                .arg(&tls.server_key)
                .arg("--trusted-ca-file")
                .arg(&tls.ca_file)
                .arg("--client-cert-auth");
        }
        let metrics = format!("http://127.0.0.1:{}", member.metrics_port);
        let child = command
            .args(["--listen-metrics-urls", &metrics])
            .args(["--name", &member.name])
            .arg("--data-dir")
            .arg(&data)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            // Quick elections, so failover fits in a test.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .args(["--logger", "zap", "--log-level", "warn"])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting etcd");
        self.members[index].child = Some(child);
    }

    /// Client URLs of every member, running or not.
    pub fn endpoints(&self) -> Vec<String> {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        self.members
            .iter()
            .map(|m| format!("{scheme}://127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// The endpoints as one comma-separated flag value.
    pub fn endpoints_flag(&self) -> String {
        self.endpoints().join(",")
    }

    /// Kills member `index` with SIGKILL.
    pub fn kill(&mut self, index: usize) {
        let member = &mut self.members[index];
        if let Some(mut child) = member.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            member.held_ports = [member.client_port, member.peer_port, member.metrics_port]
                .into_iter()
                .filter_map(|port| hold_port(port).ok())
                .collect();
        }
    }

    /// Starts member `index` again on its data directory and ports, and waits until it
    /// listens for clients. A port taken in the moment between releasing it and etcd
    /// binding it is waited out: the member starts again until it binds.
    pub fn restart(&mut self, index: usize) {
        assert!(self.members[index].child.is_none(), "member {index} is running");
        let log_path = self.dir.path().join(format!("{}.log", self.members[index].name));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let log_before = std::fs::metadata(&log_path).map(|m| m.len()).unwrap_or(0);
            self.members[index].held_ports.clear();
            self.launch(index);
            let client_port = self.members[index].client_port;
            loop {
                let exited = match &mut self.members[index].child {
                    Some(child) => !matches!(child.try_wait(), Ok(None)),
                    None => true,
                };
                if exited {
                    break;
                }
                if TcpStream::connect(("127.0.0.1", client_port)).is_ok() {
                    return;
                }
                if Instant::now() > deadline {
                    panic!("etcd member {index} did not listen again; logs:\n{}", self.logs());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            self.members[index].child = None;
            let log = std::fs::read(&log_path).unwrap_or_default();
            let since_launch = String::from_utf8_lossy(log.get(log_before as usize..).unwrap_or_default());
            if !since_launch.contains("address already in use") || Instant::now() > deadline {
                panic!("etcd member {index} exited on restart; logs:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The process id of member `index`, while it runs.
    pub fn pid(&self, index: usize) -> Option<u32> {
        self.members[index].child.as_ref().map(Child::id)
    }

    /// Stops member `index` with SIGSTOP: its connections stay open and nothing answers.
    pub fn pause(&self, index: usize) {
        self.signal(index, "-STOP");
    }

    /// Lets a paused member `index` go on (SIGCONT).
    pub fn resume(&self, index: usize) {
        self.signal(index, "-CONT");
    }

    fn signal(&self, index: usize, signal: &str) {
        let pid = self.pid(index).expect("the member runs").to_string();
        let sent = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("running kill");
        assert!(sent.success(), "kill {signal} {pid} failed");
    }

    /// The running member that reports itself the leader (`etcd_server_is_leader 1`).
    pub fn leader(&self) -> Option<usize> {
        (0..self.members.len()).find(|&i| {
            self.members[i].child.is_some()
                && self
                    .http_get(i, "/metrics")
                    .is_some_and(|body| body.lines().any(|line| line == "etcd_server_is_leader 1"))
        })
    }

    /// Waits until a running member reports itself the leader, and returns it.
    pub fn wait_leader(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return leader;
            }
            assert!(Instant::now() < deadline, "no etcd member became leader");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A plain HTTP GET on member `index`'s metrics port.
    fn http_get(&self, index: usize, path: &str) -> Option<String> {
        let port = self.members[index].metrics_port;
        let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
        let _ = stream.set_read_timeout(Some(Duration::from_secs(3)));
        let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).ok()?;
        let mut answer = String::new();
        let _ = stream.read_to_string(&mut answer);
        Some(answer)
    }

    /// Whether member `index` reports itself healthy (has a leader).
    pub fn member_healthy(&self, index: usize) -> bool {
        self.http_get(index, "/health")
            .is_some_and(|answer| answer.contains("\"health\":\"true\""))
    }

    /// Waits until every running member is healthy.
    pub fn wait_healthy(&mut self, timeout: Duration) {
        if !self.become_healthy(timeout) {
            panic!("etcd did not become healthy; logs:\n{}", self.logs());
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}
