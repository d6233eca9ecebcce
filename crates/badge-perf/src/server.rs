//! A badge process to measure: started on a fresh or given data dir, ready when /readyz
//! answers, driven by the load generator as the admin, stopped with SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use serde_json::Value;

use crate::client::call;
use crate::load;

/// Longer than the usage flush period badge-perf gives its servers (one second): a CPU
/// window that ends after this long idle holds the flush of everything its requests noted,
/// and one that starts after it holds none of what came before.
pub(crate) const PAST_A_FLUSH: Duration = Duration::from_millis(1500);

pub(crate) struct Server {
    child: Child,
    dir: Option<tempfile::TempDir>,
    pub path: PathBuf,
    pub port: u16,
}

impl Server {
    pub(crate) fn start(
        badge: &Path,
        dir: tempfile::TempDir,
        extra: &[&str],
    ) -> anyhow::Result<(Server, Duration)> {
        // badge refuses a data dir others can read; a new temporary one follows the umask.
        std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let started = Instant::now();
        let mut child = Command::new(badge)
            .args(["server", "--secure-port", "0", "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", badge.display()))?;
        let stderr = child.stderr.take().context("stderr")?;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(port) = line.split("serving securely on 127.0.0.1:").nth(1) {
                    let _ = tx.send(port.trim().parse::<u16>().unwrap_or(0));
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(60))
            .context("badge did not start")?;
        let server = Server {
            child,
            path: dir.path().to_path_buf(),
            dir: Some(dir),
            port,
        };
        let tls = load::client_config(&server.ca(), None, None)?;
        loop {
            if let Ok((200, _)) = block(call(&tls, port, "GET", "/readyz", None)) {
                break;
            }
            if started.elapsed() > Duration::from_secs(60) {
                return Err(anyhow!("badge did not become ready"));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        Ok((server, started.elapsed()))
    }

    pub(crate) fn ca(&self) -> PathBuf {
        self.path.join("pki/ca.crt")
    }

    pub(crate) fn admin(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let pki = self.path.join("pki");
        load::client_config(
            &self.ca(),
            Some(&pki.join("admin.crt")),
            Some(&pki.join("admin.key")),
        )
    }

    pub(crate) fn rss_bytes(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("VmRSS:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(0, |kb| kb * 1024)
    }

    /// CPU time the server has used, user and system, in clock ticks (1/100 s).
    pub(crate) fn cpu_ticks(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                // The fields after the command name, which is in parentheses and may hold spaces.
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let user: u64 = fields.get(11)?.parse().ok()?;
                let system: u64 = fields.get(12)?.parse().ok()?;
                Some(user + system)
            })
            .unwrap_or(0)
    }

    /// Waits (at most two minutes) until the server is idle, using at most one clock tick of
    /// CPU in 300 ms: what a phase left behind (a recount, freed memory) is done before the
    /// next phase is measured or its memory read. A phase whose usage flush must be over
    /// waits [`PAST_A_FLUSH`] instead.
    pub(crate) fn settle(&self) {
        self.settle_over(Duration::from_millis(300));
    }

    /// Waits (at most two minutes) until the server uses at most one clock tick of CPU in
    /// `window`. A window longer than the usage flush period cannot fall between two flushes,
    /// so the flush of what a phase noted is part of that phase.
    pub(crate) fn settle_over(&self, window: Duration) {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        let mut before = self.cpu_ticks();
        while std::time::Instant::now() < deadline {
            std::thread::sleep(window);
            let now = self.cpu_ticks();
            if now.saturating_sub(before) <= 1 {
                return;
            }
            before = now;
        }
    }

    pub(crate) fn stop(mut self) -> anyhow::Result<tempfile::TempDir> {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        self.dir.take().context("the data dir")
    }

    /// The load generator against this server, as the admin.
    pub(crate) fn load(
        &self,
        path: &str,
        bodies: &[String],
        seconds: f64,
        once: bool,
    ) -> anyhow::Result<Value> {
        self.load_with(path, bodies, seconds, once, &[])
    }

    /// Runs the load generator once over `bodies` (TokenRequests) and returns the tokens it
    /// was given, all `bodies.len()` of them, in order; fails on any refused request.
    pub(crate) fn load_tokens(
        &self,
        path: &str,
        bodies: &[String],
        extra: &[&str],
    ) -> anyhow::Result<Vec<String>> {
        let saved = tempfile::NamedTempFile::new()?;
        let saved_path = saved.path().to_string_lossy().into_owned();
        let mut options = extra.to_vec();
        options.extend(["--save-tokens", &saved_path]);
        let minted = self.load_with(path, bodies, 0.0, true, &options)?;
        anyhow::ensure!(
            minted["errors"] == 0,
            "minting {} tokens failed: {minted}",
            bodies.len()
        );
        let tokens: Vec<String> = std::fs::read_to_string(saved.path())?
            .lines()
            .map(str::to_string)
            .collect();
        anyhow::ensure!(
            tokens.len() == bodies.len(),
            "{} of {} tokens minted",
            tokens.len(),
            bodies.len()
        );
        Ok(tokens)
    }

    /// The load generator with more of its options (`load::LoadOptions`).
    pub(crate) fn load_with(
        &self,
        path: &str,
        bodies: &[String],
        seconds: f64,
        once: bool,
        extra: &[&str],
    ) -> anyhow::Result<Value> {
        let file = tempfile::NamedTempFile::new()?;
        std::fs::write(file.path(), bodies.join("\n"))?;
        let pki = self.path.join("pki");
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args([
            "load",
            "--port",
            &self.port.to_string(),
            "--path",
            path,
            "--seconds",
            &seconds.to_string(),
        ])
        .arg("--ca")
        .arg(self.ca())
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"))
        .arg("--bodies")
        .arg(file.path());
        if once {
            cmd.arg("--once");
        }
        cmd.args(extra);
        run_load(cmd)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn run_load(mut cmd: Command) -> anyhow::Result<Value> {
    let out = cmd.output()?;
    if !out.status.success() {
        return Err(anyhow!(
            "load generator failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
