//! `badge agent`: the kubelet's token part for any machine that runs workloads. It watches
//! the pods bound to its node and materializes their projected volumes (ServiceAccount
//! token, ConfigMap, Secret and downward API sources) the way the kubelet does
//! (`pkg/kubelet/token/token_manager.go`, `pkg/volume/projected`,
//! `pkg/volume/util/atomic_writer.go`): files written into a timestamped directory, made
//! visible by swapping the `..data` symlink with a rename, refreshed at 80 % of the
//! token's lifetime (or after 24 h), kept when the API is unreachable, and removed with the
//! pod.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use base64::Engine;
use clap::Args;
use serde_json::{Value, json};

use crate::client::Client;

/// Flags of `badge agent`.
#[derive(Args, Debug, Clone)]
pub struct AgentOptions {
    /// The node's kubeconfig (from `badge node add`).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// The node this agent plays the kubelet for.
    #[arg(long)]
    node_name: String,
    /// Where pod volumes are written (`ROOT/pods/<uid>/volumes/...`, like /var/lib/kubelet).
    #[arg(long)]
    root: PathBuf,
    /// Refresh a token once this fraction of its lifetime has passed.
    #[arg(long, default_value_t = 0.8)]
    token_refresh_fraction: f64,
    /// Refresh a token at least this often.
    #[arg(long, default_value_t = 24 * 3600)]
    max_token_refresh_seconds: u64,
    /// Serve Prometheus metrics here (for example 127.0.0.1:10255).
    #[arg(long)]
    metrics_bind_address: Option<std::net::SocketAddr>,
}

/// What the agent counts, reported in its log and at `--metrics-bind-address`.
#[derive(Default, Debug)]
struct Counters {
    tokens_requested: AtomicU64,
    token_request_errors: AtomicU64,
    volumes_written: AtomicU64,
    volume_write_errors: AtomicU64,
    pods_cleaned: AtomicU64,
}

impl Counters {
    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters.
    fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "badge_agent_token_requests_total",
                "TokenRequests sent.",
                &self.tokens_requested,
            ),
            (
                "badge_agent_token_request_errors_total",
                "TokenRequests that failed.",
                &self.token_request_errors,
            ),
            (
                "badge_agent_volumes_written_total",
                "Projected volumes written.",
                &self.volumes_written,
            ),
            (
                "badge_agent_volume_write_errors_total",
                "Projected volume writes that failed (old files kept).",
                &self.volume_write_errors,
            ),
            (
                "badge_agent_pods_cleaned_total",
                "Pods whose volumes were removed.",
                &self.pods_cleaned,
            ),
        ] {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}\n",
                value.load(Ordering::Relaxed)
            ));
        }
        out
    }
}

/// Serves the counters as Prometheus text on `address` (plain HTTP, meant for loopback).
async fn serve_metrics(address: std::net::SocketAddr, counters: Arc<Counters>) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(address)
        .await
        .with_context(|| format!("binding {address}"))?;
    tracing::info!(%address, "serving agent metrics");
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let counters = counters.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_request| {
                    let body = counters.render();
                    async move {
                        let mut response =
                            http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                        response.headers_mut().insert(
                            http::header::CONTENT_TYPE,
                            http::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        Ok::<_, std::convert::Infallible>(response)
                    }
                });
                let io = hyper_util::rt::TokioIo::new(tcp);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
        }
    });
    Ok(())
}

struct VolumeState {
    due: Instant,
    failures: u32,
}

struct PodState {
    pod: Value,
    volumes: HashMap<String, VolumeState>,
}

struct Agent {
    client: Client,
    options: AgentOptions,
    pods: HashMap<String, PodState>,
    counters: Arc<Counters>,
}

fn uid_of(pod: &Value) -> String {
    pod.pointer("/metadata/uid")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

fn projected_volumes(pod: &Value) -> Vec<Value> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .map(|v| {
            v.iter()
                .filter(|v| v.get("projected").is_some())
                .cloned()
                .collect()
        })
        .unwrap_or_default()
}

/// When a token issued at `issued` and expiring at `expires` (unix seconds) must be
/// replaced: after `fraction` of its life or `max` seconds, whichever is sooner, plus a
/// little jitter so many pods do not refresh together.
pub fn refresh_after(issued: i64, expires: i64, fraction: f64, max: i64, jitter_unit: f64) -> Duration {
    let life = (expires - issued).max(0) as f64;
    let base = (life * fraction).min(max as f64).max(1.0);
    let jitter = (base * 0.1).min(10.0) * jitter_unit.clamp(0.0, 1.0);
    Duration::from_secs_f64(base + jitter)
}

/// The `jti` of a token, for logs (never the token).
fn jti_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("jti").and_then(Value::as_str).map(String::from))
        .unwrap_or_default()
}

/// A relative path that stays inside the volume.
fn safe_relative(path: &str) -> anyhow::Result<PathBuf> {
    let p = Path::new(path);
    if path.is_empty() || p.components().any(|c| !matches!(c, Component::Normal(_))) || path.starts_with("..")
    {
        bail!("invalid path {path:?} in a projected volume");
    }
    Ok(p.to_path_buf())
}

/// Writes `files` into `dir` atomically (the kubelet's atomic writer): readers see the old
/// set or the new set, never a mix. Refuses to write through a symlink it did not make.
pub fn write_atomically(dir: &Path, files: &[(PathBuf, Vec<u8>, u32)]) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)?;
    if std::fs::symlink_metadata(dir)?.file_type().is_symlink() {
        bail!("{} is a symlink; refusing to write through it", dir.display());
    }
    let now = jiff::Timestamp::now();
    let stamp = format!(
        "..{}.{:09}",
        now.strftime("%Y_%m_%d_%H_%M_%S"),
        now.subsec_nanosecond()
    );
    let stamped = dir.join(&stamp);
    std::fs::DirBuilder::new().mode(0o755).create(&stamped)?;
    for (path, bytes, mode) in files {
        let target = stamped.join(path);
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(*mode)
            .open(&target)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_all()?;
    }
    let data = dir.join("..data");
    let old = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    std::fs::rename(&tmp, &data)?;
    let top: HashSet<String> = files
        .iter()
        .filter_map(|(p, _, _)| {
            p.components()
                .next()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
        })
        .collect();
    for name in &top {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => bail!("{} exists and is not the agent's symlink", link.display()),
            Err(_) => std::os::unix::fs::symlink(Path::new("..data").join(name), &link)?,
        }
    }
    // Names the new set no longer has.
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !top.contains(&name) && entry.file_type()?.is_symlink() {
            std::fs::remove_file(entry.path())?;
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let old_dir = dir.join(old);
        if old_dir.starts_with(dir)
            && old_dir
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".."))
        {
            let _ = std::fs::remove_dir_all(old_dir);
        }
    }
    Ok(())
}

impl Agent {
    fn volume_dir(&self, uid: &str, volume: &str) -> PathBuf {
        self.options
            .root
            .join("pods")
            .join(uid)
            .join("volumes")
            .join("kubernetes.io~projected")
            .join(volume)
    }

    async fn register_node(&self) -> anyhow::Result<()> {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.options.node_name}});
        let (status, body) = self.client.request("POST", "/api/v1/nodes", Some(node)).await?;
        if status != 201 && status != 409 {
            bail!(
                "registering node {}: {}",
                self.options.node_name,
                crate::client::error_text(&body)
            );
        }
        Ok(())
    }

    /// Tracks a pod's current state; new volumes are due now.
    fn upsert(&mut self, pod: Value) {
        let uid = uid_of(&pod);
        if uid.is_empty() || pod.pointer("/metadata/deletionTimestamp").is_some() {
            return self.remove(&uid);
        }
        let names: Vec<String> = projected_volumes(&pod)
            .iter()
            .filter_map(|v| v.get("name").and_then(Value::as_str).map(String::from))
            .collect();
        let entry = self.pods.entry(uid).or_insert_with(|| PodState {
            pod: pod.clone(),
            volumes: HashMap::new(),
        });
        entry.pod = pod;
        for name in names {
            entry.volumes.entry(name).or_insert(VolumeState {
                due: Instant::now(),
                failures: 0,
            });
        }
    }

    fn remove(&mut self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        self.pods.remove(uid);
        let dir = self.options.root.join("pods").join(uid);
        if dir.exists() {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {
                    Counters::bump(&self.counters.pods_cleaned);
                    tracing::info!(pod_uid = uid, "removed the volumes of a deleted pod");
                }
                Err(e) => tracing::warn!(pod_uid = uid, error = %e, "could not remove pod volumes"),
            }
        }
    }

    /// Builds one projected volume's files; returns them and when to refresh.
    async fn render(
        &mut self,
        pod: &Value,
        volume: &Value,
    ) -> anyhow::Result<(Vec<(PathBuf, Vec<u8>, u32)>, Duration)> {
        let ns = pod
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let name = pod
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let sa = pod
            .pointer("/spec/serviceAccountName")
            .and_then(Value::as_str)
            .unwrap_or("default")
            .to_string();
        let default_mode = volume
            .pointer("/projected/defaultMode")
            .and_then(Value::as_u64)
            .unwrap_or(0o644) as u32;
        let mut files = Vec::new();
        let mut refresh = Duration::from_secs(self.options.max_token_refresh_seconds);
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(token) = source.get("serviceAccountToken") {
                let path = safe_relative(token.get("path").and_then(Value::as_str).unwrap_or("token"))?;
                let mut spec = json!({
                    "expirationSeconds": token.get("expirationSeconds").and_then(Value::as_i64).unwrap_or(3600),
                    "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": name, "uid": uid_of(pod)},
                });
                if let Some(audience) = token
                    .get("audience")
                    .and_then(Value::as_str)
                    .filter(|a| !a.is_empty())
                {
                    spec["audiences"] = json!([audience]);
                }
                let request =
                    json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
                Counters::bump(&self.counters.tokens_requested);
                let (status, body) = self
                    .client
                    .request(
                        "POST",
                        &format!("/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token"),
                        Some(request),
                    )
                    .await?;
                if status != 201 {
                    Counters::bump(&self.counters.token_request_errors);
                    bail!(
                        "token request for pod {ns}/{name}: {}",
                        crate::client::error_text(&body)
                    );
                }
                let value = body
                    .pointer("/status/token")
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("no token in the response"))?;
                let issued = jiff::Timestamp::now().as_second();
                let expires = body
                    .pointer("/status/expirationTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|t| t.parse::<jiff::Timestamp>().ok())
                    .map_or(issued + 3600, |t| t.as_second());
                let after = refresh_after(
                    issued,
                    expires,
                    self.options.token_refresh_fraction,
                    self.options.max_token_refresh_seconds as i64,
                    rand::random::<f64>(),
                );
                refresh = refresh.min(after);
                tracing::info!(pod = %format!("{ns}/{name}"), jti = %jti_of(value), refresh_in_seconds = after.as_secs(), "obtained a service account token");
                files.push((
                    path,
                    value.as_bytes().to_vec(),
                    token
                        .get("mode")
                        .and_then(Value::as_u64)
                        .map_or(default_mode, |m| m as u32),
                ));
            } else if let Some(cm) = source.get("configMap") {
                let cm_name = cm.get("name").and_then(Value::as_str).unwrap_or("");
                let (status, body) = self
                    .client
                    .request(
                        "GET",
                        &format!("/api/v1/namespaces/{ns}/configmaps/{cm_name}"),
                        None,
                    )
                    .await?;
                if status != 200 {
                    bail!("configmap {ns}/{cm_name}: {}", crate::client::error_text(&body));
                }
                files.extend(items(cm, &body["data"], default_mode, |v| {
                    Some(v.as_bytes().to_vec())
                })?);
            } else if let Some(secret) = source.get("secret") {
                let secret_name = secret.get("name").and_then(Value::as_str).unwrap_or("");
                let (status, body) = self
                    .client
                    .request(
                        "GET",
                        &format!("/api/v1/namespaces/{ns}/secrets/{secret_name}"),
                        None,
                    )
                    .await?;
                if status != 200 {
                    bail!("secret {ns}/{secret_name}: {}", crate::client::error_text(&body));
                }
                files.extend(items(secret, &body["data"], default_mode, |v| {
                    base64::engine::general_purpose::STANDARD.decode(v).ok()
                })?);
            } else if let Some(downward) = source.get("downwardAPI") {
                for item in downward
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let field = item
                        .pointer("/fieldRef/fieldPath")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    let pointer = format!("/{}", field.replace('.', "/"));
                    let value = pod
                        .pointer(&pointer)
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                    let path = safe_relative(item.get("path").and_then(Value::as_str).unwrap_or(""))?;
                    files.push((
                        path,
                        value.into_bytes(),
                        item.get("mode")
                            .and_then(Value::as_u64)
                            .map_or(default_mode, |m| m as u32),
                    ));
                }
            }
        }
        Ok((files, refresh))
    }

    /// Writes every volume that is due.
    async fn process_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, String)> = self
            .pods
            .iter()
            .flat_map(|(uid, p)| {
                p.volumes
                    .iter()
                    .filter(|(_, v)| v.due <= now)
                    .map(move |(n, _)| (uid.clone(), n.clone()))
            })
            .collect();
        for (uid, volume_name) in due {
            let Some(pod) = self.pods.get(&uid).map(|p| p.pod.clone()) else {
                continue;
            };
            let Some(volume) = projected_volumes(&pod)
                .into_iter()
                .find(|v| v.get("name").and_then(Value::as_str) == Some(&volume_name))
            else {
                continue;
            };
            let result = match self.render(&pod, &volume).await {
                Ok((files, refresh)) => {
                    write_atomically(&self.volume_dir(&uid, &volume_name), &files).map(|()| refresh)
                }
                Err(e) => Err(e),
            };
            let Some(state) = self
                .pods
                .get_mut(&uid)
                .and_then(|p| p.volumes.get_mut(&volume_name))
            else {
                continue;
            };
            match result {
                Ok(refresh) => {
                    state.failures = 0;
                    state.due = Instant::now() + refresh;
                    Counters::bump(&self.counters.volumes_written);
                    tracing::info!(pod_uid = %uid, volume = %volume_name, counters = ?self.counters, "wrote projected volume");
                }
                Err(e) => {
                    // Keep what is on disk (the old token is valid until it expires) and retry.
                    state.failures += 1;
                    Counters::bump(&self.counters.volume_write_errors);
                    let backoff = Duration::from_secs(1u64 << state.failures.min(6));
                    state.due = Instant::now() + backoff;
                    tracing::warn!(pod_uid = %uid, volume = %volume_name, error = %e, retry_in_seconds = backoff.as_secs(), "could not write projected volume");
                }
            }
        }
    }

    fn next_due(&self) -> Duration {
        let now = Instant::now();
        self.pods
            .values()
            .flat_map(|p| p.volumes.values())
            .map(|v| v.due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60))
    }

    /// Lists the node's pods, forgetting (and cleaning) those no longer bound to it.
    async fn relist(&mut self) -> anyhow::Result<String> {
        let selector = format!("spec.nodeName%3D{}", self.options.node_name);
        let (status, body) = self
            .client
            .request("GET", &format!("/api/v1/pods?fieldSelector={selector}"), None)
            .await?;
        if status != 200 {
            bail!("listing pods: {}", crate::client::error_text(&body));
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let live: HashSet<String> = items.iter().map(uid_of).collect();
        let gone: Vec<String> = self.pods.keys().filter(|u| !live.contains(*u)).cloned().collect();
        for uid in gone {
            self.remove(&uid);
        }
        // Directories left by an earlier run for pods that no longer exist.
        if let Ok(entries) = std::fs::read_dir(self.options.root.join("pods")) {
            for entry in entries.flatten() {
                let uid = entry.file_name().to_string_lossy().into_owned();
                if !live.contains(&uid) {
                    self.remove(&uid);
                }
            }
        }
        for pod in items {
            self.upsert(pod);
        }
        Ok(body
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .unwrap_or("0")
            .to_string())
    }
}

/// The files of a ConfigMap or Secret source: its `items`, or every key.
fn items(
    source: &Value,
    data: &Value,
    default_mode: u32,
    decode: impl Fn(&str) -> Option<Vec<u8>>,
) -> anyhow::Result<Vec<(PathBuf, Vec<u8>, u32)>> {
    let mut files = Vec::new();
    match source.get("items").and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                let key = item.get("key").and_then(Value::as_str).unwrap_or("");
                let raw = data
                    .get(key)
                    .and_then(Value::as_str)
                    .ok_or_else(|| anyhow!("key {key:?} is missing"))?;
                let bytes = decode(raw).ok_or_else(|| anyhow!("key {key:?} cannot be decoded"))?;
                let path = safe_relative(item.get("path").and_then(Value::as_str).unwrap_or(key))?;
                files.push((
                    path,
                    bytes,
                    item.get("mode")
                        .and_then(Value::as_u64)
                        .map_or(default_mode, |m| m as u32),
                ));
            }
        }
        None => {
            for (key, raw) in data.as_object().into_iter().flatten() {
                if let Some(bytes) = raw.as_str().and_then(&decode) {
                    files.push((safe_relative(key)?, bytes, default_mode));
                }
            }
        }
    }
    Ok(files)
}

/// Runs the agent until SIGTERM or Ctrl-C.
pub async fn run(options: AgentOptions) -> anyhow::Result<()> {
    let client = Client::from_kubeconfig(&options.kubeconfig)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(options.root.join("pods"))
        .context("creating the root")?;
    let counters = Arc::new(Counters::default());
    if let Some(address) = options.metrics_bind_address {
        serve_metrics(address, counters.clone()).await?;
    }
    let mut agent = Agent {
        client,
        options,
        pods: HashMap::new(),
        counters,
    };
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut backoff = Duration::from_millis(500);
    while let Err(e) = agent.register_node().await {
        tracing::warn!(error = %e, "cannot reach the API server yet");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
    tracing::info!(node = %agent.options.node_name, "agent started");
    loop {
        let rv = match agent.relist().await {
            Ok(rv) => rv,
            Err(e) => {
                tracing::warn!(error = %e, "listing pods failed; keeping current files");
                agent.process_due().await;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = term.recv() => return Ok(()),
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
                continue;
            }
        };
        backoff = Duration::from_millis(500);
        let selector = format!("spec.nodeName%3D{}", agent.options.node_name);
        let path = format!(
            "/api/v1/pods?fieldSelector={selector}&watch=true&allowWatchBookmarks=true&resourceVersion={rv}"
        );
        let mut events = match agent.client.watch(&path).await {
            Ok(rx) => rx,
            Err(e) => {
                tracing::warn!(error = %e, "watching pods failed");
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        agent.process_due().await;
        loop {
            let wait = agent.next_due();
            tokio::select! {
                event = events.recv() => match event {
                    Some(event) => match event["type"].as_str() {
                        Some("ADDED" | "MODIFIED") => agent.upsert(event["object"].clone()),
                        Some("DELETED") => agent.remove(&uid_of(&event["object"])),
                        Some("ERROR") => break,
                        _ => {}
                    },
                    None => break,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = term.recv() => {
                    tracing::info!(counters = ?agent.counters, "agent stopping");
                    return Ok(());
                }
            }
            agent.process_due().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn refresh_schedule() {
        let d = refresh_after(0, 3600, 0.8, 86_400, 0.0);
        assert_eq!(d.as_secs(), 2880);
        // A year-long token still refreshes within a day.
        assert_eq!(refresh_after(0, 365 * 86_400, 0.8, 86_400, 0.0).as_secs(), 86_400);
        // Jitter adds at most ten seconds.
        assert!(refresh_after(0, 3600, 0.8, 86_400, 1.0).as_secs() <= 2890);
    }

    #[test]
    fn atomic_writer_layout_and_swap() {
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        write_atomically(
            &vol,
            &[
                (PathBuf::from("token"), b"one".to_vec(), 0o644),
                (PathBuf::from("ca.crt"), b"ca".to_vec(), 0o644),
            ],
        )
        .unwrap();
        let first = std::fs::read_link(vol.join("..data")).unwrap();
        assert!(first.to_string_lossy().starts_with(".."));
        assert_eq!(
            std::fs::read_link(vol.join("token")).unwrap(),
            Path::new("..data/token")
        );
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"one");
        write_atomically(&vol, &[(PathBuf::from("token"), b"two".to_vec(), 0o644)]).unwrap();
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"two");
        assert!(
            !vol.join(&first).exists(),
            "the old timestamped directory is removed"
        );
        assert!(
            std::fs::symlink_metadata(vol.join("ca.crt")).is_err(),
            "a file no longer in the set disappears"
        );
    }

    #[test]
    fn hostile_paths_and_links_are_refused() {
        assert!(safe_relative("../x").is_err());
        assert!(safe_relative("/etc/passwd").is_err());
        assert!(safe_relative("a/../../b").is_err());
        let dir = tempfile::tempdir().unwrap();
        let vol = dir.path().join("vol");
        std::fs::create_dir(&vol).unwrap();
        std::fs::write(vol.join("token"), b"planted").unwrap();
        assert!(write_atomically(&vol, &[(PathBuf::from("token"), b"t".to_vec(), 0o644)]).is_err());
    }
}
