//! badge-agent: the kubelet's volume part for a machine that runs workloads. It registers
//! its Node, watches the pods bound to it, and materializes their projected volumes
//! (ServiceAccount token, ConfigMap, Secret and downward API sources) and plain `secret`
//! and `configMap` volumes the way the kubelet does: pkg/kubelet/token/token_manager.go
//! for the token cache and refresh rule, pkg/volume/projected/projected.go for the
//! sources, pkg/volume/secret and pkg/volume/configmap for the plain volumes,
//! pkg/volume/util/atomic_writer.go for the file layout (see [`writer`]). Each Secret,
//! ConfigMap and ServiceAccount a volume reads is watched by name, so a change rewrites
//! the volume at once. Old files are kept while the API is unreachable, and a pod's
//! directory is removed with the pod.

#![forbid(unsafe_code)]

pub mod certificate;
mod clock;
pub mod join;
pub mod metrics;
pub mod nodelease;
pub mod reachability;
pub mod schedule;
pub mod termination;
pub mod writer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{Context, anyhow, bail};
use badge_client::{Client, error_text};
use base64::Engine;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::metrics::{Counters, bump};
use crate::writer::File;

/// How often a volume is rebuilt even when its tokens are fresh, so ConfigMap and Secret
/// changes reach the files (the kubelet's periodic volume resync).
const RESYNC: Duration = Duration::from_secs(60);
/// The longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the counters are logged.
const LOG_COUNTERS: Duration = Duration::from_secs(300);

/// Flags of the agent (embedded by `badge agent`, and the `badge-agent` binary).
#[derive(clap::Args, Debug, Clone)]
pub struct AgentOptions {
    /// The node's kubeconfig (from `badge node add`); with --bootstrap-token, where the
    /// joined node's kubeconfig is kept (default: ROOT/kubelet.conf).
    #[arg(long, required_unless_present = "bootstrap_token")]
    pub kubeconfig: Option<PathBuf>,
    /// The node this agent plays the kubelet for.
    #[arg(long)]
    pub node_name: String,
    /// Where pod volumes are written (`ROOT/pods/<uid>/volumes/...`, like /var/lib/kubelet).
    #[arg(long, visible_alias = "root-dir")]
    pub root: PathBuf,
    /// Refresh a token once this fraction of its lifetime has passed.
    #[arg(long, visible_alias = "token-refresh-fraction", default_value_t = 0.8, value_parser = parse_fraction)]
    pub refresh_fraction: f64,
    /// Refresh a token at least this often, in seconds.
    #[arg(long = "max-refresh-seconds", visible_alias = "max-token-refresh-seconds", default_value = "86400", value_parser = parse_seconds)]
    pub max_refresh: Duration,
    /// Serve the counters as Prometheus text at http://ADDRESS/metrics (e.g. 127.0.0.1:10255).
    #[arg(long, visible_alias = "metrics-bind-address")]
    pub metrics_address: Option<std::net::SocketAddr>,
    #[command(flatten)]
    pub join: join::JoinOptions,
}

fn parse_fraction(text: &str) -> Result<f64, String> {
    let value: f64 = text.parse().map_err(|e| format!("{e}"))?;
    if !(value > 0.0 && value <= 1.0) {
        return Err("must be in (0, 1]".into());
    }
    Ok(value)
}

fn parse_seconds(text: &str) -> Result<Duration, String> {
    let value: u64 = text.parse().map_err(|e| format!("{e}"))?;
    if value == 0 {
        return Err("must be positive".into());
    }
    Ok(Duration::from_secs(value))
}

/// Runs the agent until `shutdown` completes. Only start-up errors (an unreadable
/// kubeconfig, an unusable root, a metrics address in use) are returned; API errors are
/// logged and retried.
pub async fn run(options: AgentOptions, shutdown: impl Future) -> anyhow::Result<()> {
    writer::validate_name(&options.node_name).context("the node name")?;
    std::fs::create_dir_all(&options.root).with_context(|| format!("creating {}", options.root.display()))?;
    writer::ensure_dir(&options.root, &["pods"])?;
    tokio::pin!(shutdown);
    let client = match &options.kubeconfig {
        Some(kubeconfig) if options.join.bootstrap_token.is_none() => {
            Arc::new(Client::from_kubeconfig(kubeconfig)?)
        }
        _ => tokio::select! {
            client = join::credentials(&options.root, options.kubeconfig.as_deref(), &options.node_name, &options.join) => client?,
            _ = &mut shutdown => return Ok(()),
        },
    };
    let mut background = vec![tokio::spawn(reachability::probe(client.clone()))];
    if options.join.bootstrap_token.is_some() {
        background.push(tokio::spawn(certificate::rotate(
            client.clone(),
            options.node_name.clone(),
            certificate::CertificateFiles::new(&options.root),
        )));
    }
    let _background = AbortOnDrop(background);
    let counters = Arc::new(Counters::default());
    if let Some(address) = options.metrics_address {
        metrics::serve(address, counters.clone()).await?;
    }
    let (changed_tx, changed) = tokio::sync::mpsc::channel(1024);
    let mut agent = Agent {
        reachable: client.reachability(),
        ctx: Ctx {
            client,
            options,
            counters,
        },
        pods: HashMap::new(),
        watches: HashMap::new(),
        terminations: termination::Terminations::default(),
        changed_tx,
        changed,
    };
    tokio::select! {
        () = agent.run() => Ok(()),
        _ = &mut shutdown => {
            // Every file write is synchronous, so stopping here never leaves half a volume.
            tracing::info!(counters = %agent.ctx.counters.summary(), "agent stopping");
            Ok(())
        }
    }
}

// === impl Agent ===

/// What does not change while the agent runs.
struct Ctx {
    client: Arc<Client>,
    options: AgentOptions,
    counters: Arc<Counters>,
}

/// A token as the kubelet's token manager caches it. No `Debug`: it holds the token.
struct CachedToken {
    /// The ServiceAccount the token was issued for: a recreated account (same name, new
    /// uid) makes the cached token useless at once.
    service_account_uid: String,
    token: String,
    expires: SystemTime,
    refresh_at: SystemTime,
}

/// The volume plugins the agent plays, with the directory each writes under
/// (`ROOT/pods/<uid>/volumes/<plugin>/<volume>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum VolumeKind {
    Projected,
    Secret,
    ConfigMap,
}

impl VolumeKind {
    fn of(volume: &Value) -> Option<VolumeKind> {
        if volume.pointer("/projected/sources").is_some() {
            Some(VolumeKind::Projected)
        } else if volume.get("secret").is_some_and(Value::is_object) {
            Some(VolumeKind::Secret)
        } else if volume.get("configMap").is_some_and(Value::is_object) {
            Some(VolumeKind::ConfigMap)
        } else {
            None
        }
    }

    fn plugin_dir(self) -> &'static str {
        match self {
            VolumeKind::Projected => "kubernetes.io~projected",
            VolumeKind::Secret => "kubernetes.io~secret",
            VolumeKind::ConfigMap => "kubernetes.io~configmap",
        }
    }
}

/// An API object a volume reads, by namespace, resource and name; a change to it makes
/// the volume due.
type ObjectRef = (String, &'static str, String);

/// The objects a volume's files come from: Secrets, ConfigMaps, and the ServiceAccount
/// of a token source.
fn volume_refs(pod: &Value, volume: &Value) -> Vec<ObjectRef> {
    let namespace = text(pod, "/metadata/namespace").to_string();
    let mut refs = Vec::new();
    let mut add = |plural: &'static str, name: &str| {
        if !name.is_empty() {
            let r = (namespace.clone(), plural, name.to_string());
            if !refs.contains(&r) {
                refs.push(r);
            }
        }
    };
    add("secrets", text(volume, "/secret/secretName"));
    add("configmaps", text(volume, "/configMap/name"));
    for source in volume
        .pointer("/projected/sources")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        add("secrets", text(source, "/secret/name"));
        add("configmaps", text(source, "/configMap/name"));
        if source.get("serviceAccountToken").is_some() {
            add("serviceaccounts", service_account(pod));
        }
    }
    refs
}

fn service_account(pod: &Value) -> &str {
    match text(pod, "/spec/serviceAccountName") {
        "" => "default",
        sa => sa,
    }
}

struct VolumeState {
    kind: VolumeKind,
    refs: Vec<ObjectRef>,
    due: Instant,
    failures: u32,
    /// By the source's path in the volume.
    tokens: HashMap<String, CachedToken>,
}

struct PodEntry {
    pod: Value,
    /// By volume name; empty for pods without volumes the agent writes.
    volumes: BTreeMap<String, VolumeState>,
}

/// Background tasks that end with the agent.
struct AbortOnDrop(Vec<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

struct Agent {
    ctx: Ctx,
    /// Whether the API server answers (see [`reachability`]).
    reachable: tokio::sync::watch::Receiver<bool>,
    /// By pod uid.
    pods: HashMap<String, PodEntry>,
    /// One watch per object the volumes read, as the kubelet's watch-based secret and
    /// configMap managers keep; each reports changes on `changed`.
    watches: HashMap<ObjectRef, tokio::task::JoinHandle<()>>,
    /// Terminating pods whose deletion is still to be confirmed.
    terminations: termination::Terminations,
    changed_tx: tokio::sync::mpsc::Sender<ObjectRef>,
    changed: tokio::sync::mpsc::Receiver<ObjectRef>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        for watch in self.watches.values() {
            watch.abort();
        }
    }
}

fn text<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// The pod's volumes the agent writes, with their kind.
fn agent_volumes(pod: &Value) -> impl Iterator<Item = (&Value, VolumeKind)> {
    pod.pointer("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| VolumeKind::of(v).map(|kind| (v, kind)))
}

/// The `jti` of a token, for logs; the token itself is never logged.
pub fn jti_of(token: &str) -> String {
    token
        .split('.')
        .nth(1)
        .and_then(|p| base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|c| c.get("jti").and_then(Value::as_str).map(String::from))
        .unwrap_or_else(|| "-".into())
}

impl Agent {
    async fn run(&mut self) {
        let mut failures = 0;
        while let Err(e) = self.ctx.register_node().await {
            failures += 1;
            let wait = schedule::backoff(failures, MAX_BACKOFF);
            tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "registering the node failed");
            tokio::time::sleep(wait).await;
        }
        tracing::info!(node = %self.ctx.options.node_name, "agent started");
        let _lease = nodelease::keep_renewed(self.ctx.client.clone(), self.ctx.options.node_name.clone());
        let mut log_counters = tokio::time::interval_at(Instant::now() + LOG_COUNTERS, LOG_COUNTERS);
        let mut failures = 0;
        loop {
            let rv = match self.relist().await {
                Ok(rv) => rv,
                Err(e) => {
                    failures += 1;
                    let wait = schedule::backoff(failures, MAX_BACKOFF);
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "listing pods failed; keeping the current files");
                    self.idle(wait).await;
                    continue;
                }
            };
            let path = format!(
                "/api/v1/pods?fieldSelector={}&watch=true&allowWatchBookmarks=true&resourceVersion={rv}",
                self.ctx.selector()
            );
            let mut events = match self.ctx.client.watch(&path).await {
                Ok(events) => events,
                Err(e) => {
                    failures += 1;
                    let wait = schedule::backoff(failures, MAX_BACKOFF);
                    tracing::warn!(error = %format!("{e:#}"), retry_in = ?wait, "watching pods failed");
                    self.idle(wait).await;
                    continue;
                }
            };
            let watching = Instant::now();
            loop {
                self.reconcile_watches();
                self.process_due().await;
                self.terminations.confirm_due(&self.ctx.client).await;
                let wake = self
                    .terminations
                    .next_due()
                    .map_or(self.next_due(), |t| t.min(self.next_due()));
                tokio::select! {
                    event = events.recv() => match event {
                        Some(Ok(event)) => {
                            if !self.apply(&event) {
                                break;
                            }
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %format!("{e:#}"), "the pod watch broke; relisting");
                            break;
                        }
                        None => {
                            tracing::debug!("the pod watch ended; relisting");
                            break;
                        }
                    },
                    () = tokio::time::sleep_until(wake) => {}
                    Some(changed) = self.changed.recv() => self.object_changed(&changed),
                    Ok(()) = self.reachable.changed() => {
                        self.server_returned();
                    }
                    _ = log_counters.tick() => {
                        tracing::info!(counters = %self.ctx.counters.summary(), "agent counters");
                    }
                }
            }
            // A watch that ends at once (a server refusing it) must not spin the relist.
            if watching.elapsed() < Duration::from_secs(1) {
                failures += 1;
                self.idle(schedule::backoff(failures, MAX_BACKOFF)).await;
            } else {
                failures = 0;
            }
        }
    }

    /// Applies one watch event; false when the watch must be restarted with a relist.
    fn apply(&mut self, event: &Value) -> bool {
        let object = &event["object"];
        match event["type"].as_str() {
            Some("ADDED" | "MODIFIED") => self.upsert(object.clone()),
            Some("DELETED") => self.remove(text(object, "/metadata/uid")),
            Some("BOOKMARK") => {}
            Some("ERROR") => {
                // 410 Gone: the resourceVersion is too old; any other error also relists.
                tracing::info!(code = %object["code"], message = %text(object, "/message"), "the pod watch reported an error; relisting");
                return false;
            }
            other => tracing::warn!(kind = ?other, "unexpected watch event"),
        }
        true
    }

    /// Makes every live volume that reads `object` due now.
    fn object_changed(&mut self, object: &ObjectRef) {
        let now = Instant::now();
        for state in self.pods.values_mut().flat_map(|p| p.volumes.values_mut()) {
            if state.refs.contains(object) {
                state.due = now;
            }
        }
    }

    /// Starts a watch for each object a live volume reads and stops those no volume
    /// reads any more.
    fn reconcile_watches(&mut self) {
        let wanted: HashSet<&ObjectRef> = self
            .pods
            .values()
            .flat_map(|p| p.volumes.values())
            .flat_map(|v| v.refs.iter())
            .collect();
        self.watches.retain(|object, watch| {
            let keep = wanted.contains(object) && !watch.is_finished();
            if !keep {
                watch.abort();
            }
            keep
        });
        for object in wanted {
            if !self.watches.contains_key(object) {
                let watch = tokio::spawn(watch_object(
                    self.ctx.client.clone(),
                    object.clone(),
                    self.changed_tx.clone(),
                ));
                self.watches.insert(object.clone(), watch);
            }
        }
    }

    /// Keeps volumes fresh while the API cannot be watched; ends early when the server
    /// answers again after an outage.
    async fn idle(&mut self, wait: Duration) {
        let until = Instant::now() + wait;
        while Instant::now() < until {
            self.process_due().await;
            tokio::select! {
                () = tokio::time::sleep_until(self.next_due().min(until)) => {}
                Ok(()) = self.reachable.changed() => {
                    if self.server_returned() {
                        return;
                    }
                }
            }
        }
    }

    /// After an outage, volumes that failed are retried at once instead of at the end of
    /// their backoff. True when the server is reachable.
    fn server_returned(&mut self) -> bool {
        if !*self.reachable.borrow_and_update() {
            return false;
        }
        let now = Instant::now();
        for state in self.pods.values_mut().flat_map(|p| p.volumes.values_mut()) {
            if state.failures > 0 {
                state.due = now;
            }
        }
        true
    }

    /// Lists the node's pods and forgets (and cleans) any that are gone, including
    /// directories an earlier run left behind. Returns the list's resourceVersion.
    async fn relist(&mut self) -> anyhow::Result<String> {
        let (status, body) = self
            .ctx
            .client
            .request(
                "GET",
                &format!("/api/v1/pods?fieldSelector={}", self.ctx.selector()),
                None,
            )
            .await?;
        if status != 200 {
            bail!("listing pods ({status}): {}", error_text(&body));
        }
        let items = body["items"].as_array().cloned().unwrap_or_default();
        let live: HashSet<String> = items
            .iter()
            .map(|p| text(p, "/metadata/uid").to_string())
            .collect();
        let gone: Vec<String> = self.pods.keys().filter(|u| !live.contains(*u)).cloned().collect();
        for uid in gone {
            self.remove(&uid);
        }
        if let Ok(entries) = std::fs::read_dir(self.ctx.options.root.join("pods")) {
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
        Ok(text(&body, "/metadata/resourceVersion").to_string())
    }

    /// Tracks a pod; volumes not yet written are due now.
    fn upsert(&mut self, pod: Value) {
        let uid = text(&pod, "/metadata/uid").to_string();
        if let Err(e) = writer::validate_name(&uid) {
            tracing::warn!(error = %e, "ignoring a pod with an unusable uid");
            return;
        }
        if text(&pod, "/spec/nodeName") != self.ctx.options.node_name {
            // Moved away (or a selector the server ignored): not ours.
            self.remove(&uid);
            return;
        }
        if termination::is_terminating(&pod) {
            // As the kubelet: a terminating pod's volumes go, then its deletion is confirmed.
            self.remove(&uid);
            self.terminations.note(&uid, &pod);
            return;
        }
        let volumes: Vec<(String, VolumeKind, Vec<ObjectRef>)> = agent_volumes(&pod)
            .map(|(v, kind)| (text(v, "/name").to_string(), kind, volume_refs(&pod, v)))
            .collect();
        let entry = self.pods.entry(uid).or_insert_with(|| PodEntry {
            pod: Value::Null,
            volumes: BTreeMap::new(),
        });
        entry.pod = pod;
        entry.volumes.retain(|name, state| {
            volumes
                .iter()
                .any(|(n, kind, _)| n == name && *kind == state.kind)
        });
        for (name, kind, refs) in volumes {
            let state = entry.volumes.entry(name).or_insert_with(|| VolumeState {
                kind,
                refs: Vec::new(),
                due: Instant::now(),
                failures: 0,
                tokens: HashMap::new(),
            });
            state.refs = refs;
        }
    }

    /// Forgets a pod and removes `ROOT/pods/<uid>`.
    fn remove(&mut self, uid: &str) {
        if writer::validate_name(uid).is_err() {
            return;
        }
        self.pods.remove(uid);
        self.terminations.forget(uid);
        let dir = self.ctx.options.root.join("pods").join(uid);
        let Ok(meta) = std::fs::symlink_metadata(&dir) else {
            return;
        };
        // A link is removed itself, never followed.
        let result = if meta.file_type().is_dir() {
            std::fs::remove_dir_all(&dir)
        } else {
            std::fs::remove_file(&dir)
        };
        match result {
            Ok(()) => {
                bump(&self.ctx.counters.pods_cleaned);
                tracing::info!(pod_uid = uid, "pod cleaned: removed its volumes");
            }
            Err(e) => tracing::warn!(pod_uid = uid, error = %e, "could not remove the pod's volumes"),
        }
    }

    fn next_due(&self) -> Instant {
        self.pods
            .values()
            .flat_map(|p| p.volumes.values())
            .map(|v| v.due)
            .min()
            .unwrap_or_else(|| Instant::now() + RESYNC)
            .min(Instant::now() + RESYNC)
    }

    /// Rebuilds and writes every volume that is due.
    async fn process_due(&mut self) {
        let now = Instant::now();
        let due: Vec<(String, String)> = self
            .pods
            .iter()
            .flat_map(|(uid, p)| {
                p.volumes
                    .iter()
                    .filter(|(_, v)| v.due <= now)
                    .map(move |(name, _)| (uid.clone(), name.clone()))
            })
            .collect();
        for (uid, name) in due {
            let Some(entry) = self.pods.get_mut(&uid) else {
                continue;
            };
            let Some(state) = entry.volumes.get_mut(&name) else {
                continue;
            };
            self.ctx.sync_volume(&uid, &entry.pod, &name, state).await;
        }
    }
}

/// Watches one object through a `metadata.name` field selector (the only list or watch
/// the Node authorizer grants for Secrets, ConfigMaps and ServiceAccounts) and reports it
/// on `changed` at every (re)start and every event, until aborted.
async fn watch_object(client: Arc<Client>, object: ObjectRef, changed: tokio::sync::mpsc::Sender<ObjectRef>) {
    let (namespace, plural, name) = &object;
    let collection = format!("/api/v1/namespaces/{namespace}/{plural}?fieldSelector=metadata.name%3D{name}");
    let mut failures = 0;
    loop {
        let started = Instant::now();
        let result: anyhow::Result<()> = async {
            let (status, body) = client.request("GET", &collection, None).await?;
            if status != 200 {
                bail!(
                    "listing {plural} {namespace}/{name} ({status}): {}",
                    error_text(&body)
                );
            }
            // Whatever happened while no watch ran is caught up by a rebuild.
            if changed.send(object.clone()).await.is_err() {
                return Ok(());
            }
            let rv = text(&body, "/metadata/resourceVersion");
            let mut events = client
                .watch(&format!("{collection}&watch=true&resourceVersion={rv}"))
                .await?;
            while let Some(event) = events.recv().await {
                let event = event?;
                let kind = event["type"].as_str().unwrap_or("");
                if kind == "ERROR" {
                    bail!("the watch reported {}", error_text(&event["object"]));
                }
                if matches!(kind, "ADDED" | "MODIFIED" | "DELETED")
                    && changed.send(object.clone()).await.is_err()
                {
                    return Ok(());
                }
            }
            Ok(())
        }
        .await;
        if changed.is_closed() {
            return;
        }
        if let Err(e) = result {
            tracing::debug!(object = %format!("{plural} {namespace}/{name}"), error = %format!("{e:#}"), "watching an object failed");
        }
        // A watch that ends at once must not spin.
        if started.elapsed() < Duration::from_secs(1) {
            failures += 1;
        } else {
            failures = 0;
        }
        tokio::time::sleep(schedule::backoff(failures, MAX_BACKOFF)).await;
    }
}

// === impl Ctx ===

impl Ctx {
    fn selector(&self) -> String {
        format!("spec.nodeName%3D{}", self.options.node_name)
    }

    async fn register_node(&self) -> anyhow::Result<()> {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.options.node_name}});
        let (status, body) = self.client.request("POST", "/api/v1/nodes", Some(node)).await?;
        match status {
            201 => tracing::info!(node = %self.options.node_name, "registered the node"),
            409 => {}
            _ => bail!(
                "creating Node {} ({status}): {}",
                self.options.node_name,
                error_text(&body)
            ),
        }
        Ok(())
    }

    /// Builds one volume and writes it; on failure keeps the files on disk and schedules a
    /// retry with backoff.
    async fn sync_volume(&self, uid: &str, pod: &Value, name: &str, state: &mut VolumeState) {
        let pod_name = text(pod, "/metadata/name");
        let namespace = text(pod, "/metadata/namespace");
        let result = match self.build(pod, name, state.kind, &mut state.tokens).await {
            Ok(files) => writer::ensure_dir(
                &self.options.root,
                &["pods", uid, "volumes", state.kind.plugin_dir(), name],
            )
            .and_then(|dir| writer::write(&dir, &files)),
            Err(e) => Err(e),
        };
        let now = clock::now();
        match result {
            Ok(written) => {
                state.failures = 0;
                if written {
                    bump(&self.counters.volumes_written);
                    tracing::info!(pod = %format!("{namespace}/{pod_name}"), pod_uid = uid, volume = name, "volume written");
                }
                let next = state
                    .tokens
                    .values()
                    .map(|t| t.refresh_at)
                    .min()
                    .unwrap_or(now + RESYNC)
                    .min(now + RESYNC);
                state.due = Instant::now() + next.duration_since(now).unwrap_or_default();
            }
            Err(e) => {
                state.failures += 1;
                bump(&self.counters.volume_write_errors);
                let wait = schedule::backoff(state.failures, MAX_BACKOFF);
                state.due = Instant::now() + wait;
                if state.failures == 1 {
                    self.report_failed_mount(pod, name, &e).await;
                }
                let expired = state.tokens.values().any(|t| t.expires <= now);
                if expired {
                    tracing::error!(pod = %format!("{namespace}/{pod_name}"), pod_uid = uid, volume = name, error = %format!("{e:#}"), retry_in = ?wait, "updating the volume failed and its token has expired");
                } else {
                    tracing::warn!(pod = %format!("{namespace}/{pod_name}"), pod_uid = uid, volume = name, error = %format!("{e:#}"), retry_in = ?wait, "updating the volume failed; the old files are kept");
                }
            }
        }
    }

    /// Tells the pod's users why a volume cannot be written, as the kubelet's
    /// `FailedMount` Warning event does. Best effort: the failure is logged anyway.
    async fn report_failed_mount(&self, pod: &Value, volume: &str, error: &anyhow::Error) {
        let namespace = text(pod, "/metadata/namespace");
        let pod_name = text(pod, "/metadata/name");
        let now = clock::timestamp();
        let stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        let event = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{pod_name}.{:016x}", rand::random::<u64>()),
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "namespace": namespace,
                "name": pod_name,
                "uid": text(pod, "/metadata/uid"),
            },
            "reason": "FailedMount",
            "message": format!("MountVolume.SetUp failed for volume {volume:?} : {error:#}"),
            "type": "Warning",
            "source": {"component": "kubelet", "host": self.options.node_name},
            "reportingComponent": "kubelet",
            "reportingInstance": self.options.node_name,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        });
        let path = format!("/api/v1/namespaces/{namespace}/events");
        match self.client.request("POST", &path, Some(event)).await {
            Ok((201, _)) => {}
            Ok((status, body)) => {
                tracing::debug!(status, error = %error_text(&body), "recording a FailedMount event failed")
            }
            Err(e) => tracing::debug!(error = %format!("{e:#}"), "recording a FailedMount event failed"),
        }
    }

    /// The files of one volume: a projected volume's in source order, or a Secret's or
    /// ConfigMap's keys (pkg/volume/secret, pkg/volume/configmap).
    async fn build(
        &self,
        pod: &Value,
        name: &str,
        kind: VolumeKind,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<Vec<File>> {
        let volume = agent_volumes(pod)
            .find(|(v, k)| text(v, "/name") == name && *k == kind)
            .map(|(v, _)| v)
            .ok_or_else(|| anyhow!("the pod has no volume {name:?}"))?;
        let namespace = text(pod, "/metadata/namespace");
        let (source, plural, object_name) = match kind {
            VolumeKind::Projected => return self.build_projected(pod, name, volume, tokens).await,
            VolumeKind::Secret => (&volume["secret"], "secrets", text(volume, "/secret/secretName")),
            VolumeKind::ConfigMap => (
                &volume["configMap"],
                "configmaps",
                text(volume, "/configMap/name"),
            ),
        };
        let default_mode = mode(source.get("defaultMode"), 0o644)?;
        let object = self
            .get_object(namespace, plural, object_name, is_optional(source))
            .await?;
        let data = match &object {
            Some(object) => object_data(plural, object)?,
            None => BTreeMap::new(),
        };
        key_files(source, object_name, object.is_some(), &data, default_mode)
    }

    /// The files of one projected volume, in source order.
    async fn build_projected(
        &self,
        pod: &Value,
        name: &str,
        volume: &Value,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<Vec<File>> {
        let default_mode = mode(volume.pointer("/projected/defaultMode"), 0o644)?;
        let namespace = text(pod, "/metadata/namespace");
        let mut files = Vec::new();
        for source in volume
            .pointer("/projected/sources")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(token) = source.get("serviceAccountToken") {
                let path = token.get("path").and_then(Value::as_str).unwrap_or("");
                writer::validate_path(path)?;
                let value = self.token(pod, name, token, path, tokens).await?;
                files.push(File {
                    path: path.to_string(),
                    data: value.into_bytes(),
                    mode: default_mode,
                });
            } else if let Some((plural, source)) = source
                .get("configMap")
                .map(|s| ("configmaps", s))
                .or_else(|| source.get("secret").map(|s| ("secrets", s)))
            {
                let object_name = text(source, "/name");
                let object = self
                    .get_object(namespace, plural, object_name, is_optional(source))
                    .await?;
                let data = match &object {
                    Some(object) => object_data(plural, object)?,
                    None => BTreeMap::new(),
                };
                files.extend(key_files(
                    source,
                    object_name,
                    object.is_some(),
                    &data,
                    default_mode,
                )?);
            } else if let Some(downward) = source.get("downwardAPI") {
                for item in downward
                    .get("items")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let path = text(item, "/path");
                    writer::validate_path(path)?;
                    let field = item
                        .pointer("/fieldRef/fieldPath")
                        .and_then(Value::as_str)
                        .ok_or_else(|| anyhow!("downwardAPI item {path:?}: only fieldRef is supported"))?;
                    files.push(File {
                        path: path.to_string(),
                        data: field_value(pod, field)?.into_bytes(),
                        mode: mode(item.get("mode"), default_mode)?,
                    });
                }
            } else {
                tracing::debug!(volume = name, "skipping an unsupported projected source");
            }
        }
        Ok(files)
    }

    /// A cached token while it is fresh, else a new one from the TokenRequest API.
    async fn token(
        &self,
        pod: &Value,
        volume: &str,
        source: &Value,
        path: &str,
        tokens: &mut HashMap<String, CachedToken>,
    ) -> anyhow::Result<String> {
        let now = clock::now();
        let namespace = text(pod, "/metadata/namespace");
        let pod_name = text(pod, "/metadata/name");
        let sa = service_account(pod);
        let sa_uid = self.service_account_uid(namespace, sa).await?;
        if let Some(cached) = tokens.get(path)
            && cached.service_account_uid == sa_uid
            && now < cached.refresh_at
        {
            return Ok(cached.token.clone());
        }
        let expiration = source
            .get("expirationSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(3600);
        let mut spec = json!({
            "expirationSeconds": expiration,
            "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod_name, "uid": text(pod, "/metadata/uid")},
        });
        // An empty audience means the API audiences: send none and let the server choose.
        if let Some(audience) = source
            .get("audience")
            .and_then(Value::as_str)
            .filter(|a| !a.is_empty())
        {
            spec["audiences"] = json!([audience]);
        }
        let request = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec});
        bump(&self.counters.tokens_requested);
        let response = self
            .client
            .request(
                "POST",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{sa}/token"),
                Some(request),
            )
            .await;
        let body = match response {
            Ok((201, body)) => body,
            Ok((status, body)) => {
                bump(&self.counters.token_request_errors);
                bail!(
                    "token request for {namespace}/{sa} ({status}): {}",
                    error_text(&body)
                );
            }
            Err(e) => {
                bump(&self.counters.token_request_errors);
                return Err(e.context(format!("token request for {namespace}/{sa}")));
            }
        };
        let token = text(&body, "/status/token");
        if token.is_empty() {
            bump(&self.counters.token_request_errors);
            bail!("the token response for {namespace}/{sa} has no token");
        }
        let expires = text(&body, "/status/expirationTimestamp")
            .parse::<jiff::Timestamp>()
            .map(SystemTime::from)
            .context("the token response's expirationTimestamp")?;
        // Upstream's iat: the reported expiry minus the granted lifetime.
        let granted = body
            .pointer("/spec/expirationSeconds")
            .and_then(Value::as_u64)
            .unwrap_or(expiration.max(0).unsigned_abs());
        let issued = expires
            .checked_sub(Duration::from_secs(granted))
            .unwrap_or(now)
            .min(now);
        let jitter = Duration::from_secs_f64(rand::random::<f64>() * schedule::MAX_JITTER.as_secs_f64());
        let refresh_at = schedule::refresh_at(
            issued,
            expires,
            now,
            self.options.refresh_fraction,
            self.options.max_refresh,
            jitter,
        );
        let jti = jti_of(token);
        let refresh_in = refresh_at.duration_since(now).unwrap_or_default();
        let previous = tokens.get(path).map(|t| jti_of(&t.token));
        tracing::info!(
            pod = %format!("{namespace}/{pod_name}"),
            volume,
            service_account = sa,
            jti = %jti,
            previous_jti = previous.as_deref().unwrap_or("-"),
            expires = %jiff::Timestamp::try_from(expires).map(|t| t.to_string()).unwrap_or_default(),
            refresh_in = ?Duration::from_secs(refresh_in.as_secs()),
            "token refreshed"
        );
        tokens.insert(
            path.to_string(),
            CachedToken {
                service_account_uid: sa_uid,
                token: token.to_string(),
                expires,
                refresh_at,
            },
        );
        Ok(token.to_string())
    }

    /// The uid of the ServiceAccount a token would be issued for now.
    async fn service_account_uid(&self, namespace: &str, name: &str) -> anyhow::Result<String> {
        writer::validate_name(name).context("the pod's ServiceAccount")?;
        let (status, body) = self
            .client
            .request(
                "GET",
                &format!("/api/v1/namespaces/{namespace}/serviceaccounts/{name}"),
                None,
            )
            .await?;
        if status != 200 {
            bail!(
                "getting serviceaccount {namespace}/{name} ({status}): {}",
                error_text(&body)
            );
        }
        let uid = text(&body, "/metadata/uid");
        if uid.is_empty() {
            bail!("serviceaccount {namespace}/{name} has no uid");
        }
        Ok(uid.to_string())
    }

    /// GETs the ConfigMap or Secret a volume names; None when it is missing and optional.
    async fn get_object(
        &self,
        namespace: &str,
        plural: &str,
        name: &str,
        optional: bool,
    ) -> anyhow::Result<Option<Value>> {
        writer::validate_name(name).with_context(|| format!("a {plural} source"))?;
        let (status, body) = self
            .client
            .request(
                "GET",
                &format!("/api/v1/namespaces/{namespace}/{plural}/{name}"),
                None,
            )
            .await?;
        match status {
            200 => Ok(Some(body)),
            404 if optional => Ok(None),
            // The kubelet's wording: `secret "x" not found`.
            404 => bail!("{} {name:?} not found", singular(plural)),
            _ => bail!(
                "getting {plural} {namespace}/{name} ({status}): {}",
                error_text(&body)
            ),
        }
    }
}

/// A mode from the API (a decimal number such as 420 for 0644), or `default`.
fn mode(value: Option<&Value>, default: u32) -> anyhow::Result<u32> {
    match value.filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => v
            .as_u64()
            .filter(|m| *m <= 0o777)
            .map(|m| m as u32)
            .ok_or_else(|| anyhow!("file mode {v} is not between 0 and 0777")),
    }
}

fn decode(value: &Value) -> anyhow::Result<Vec<u8>> {
    let text = value
        .as_str()
        .ok_or_else(|| anyhow!("data that is not a string"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .context("data that is not base64")
}

fn is_optional(source: &Value) -> bool {
    source.get("optional").and_then(Value::as_bool) == Some(true)
}

fn singular(plural: &str) -> &str {
    match plural {
        "configmaps" => "configmap",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

/// A Secret's decoded `data`, or a ConfigMap's `data` and `binaryData`, by key.
fn object_data(plural: &str, object: &Value) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    let mut data = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        if plural == "secrets" {
            data.insert(key.clone(), decode(value)?);
        } else if let Some(s) = value.as_str() {
            data.insert(key.clone(), s.as_bytes().to_vec());
        }
    }
    for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
        data.insert(key.clone(), decode(value)?);
    }
    Ok(data)
}

/// The files of a ConfigMap or Secret (a volume or a projected source named
/// `object_name`): its `items`, else every key. A missing object gives no files (it was
/// optional); a missing item key is an error unless optional.
fn key_files(
    source: &Value,
    object_name: &str,
    exists: bool,
    data: &BTreeMap<String, Vec<u8>>,
    default_mode: u32,
) -> anyhow::Result<Vec<File>> {
    let optional = is_optional(source);
    if !exists {
        return Ok(Vec::new());
    }
    let mut files = Vec::new();
    match source.get("items").and_then(Value::as_array) {
        Some(items) => {
            for item in items {
                let key = text(item, "/key");
                let Some(bytes) = data.get(key) else {
                    if optional {
                        continue;
                    }
                    bail!("key {key:?} of {object_name:?} is missing");
                };
                let path = text(item, "/path");
                writer::validate_path(path)?;
                files.push(File {
                    path: path.to_string(),
                    data: bytes.clone(),
                    mode: mode(item.get("mode"), default_mode)?,
                });
            }
        }
        None => {
            for (key, bytes) in data {
                writer::validate_path(key)?;
                files.push(File {
                    path: key.clone(),
                    data: bytes.clone(),
                    mode: default_mode,
                });
            }
        }
    }
    Ok(files)
}

/// A downward API `fieldRef.fieldPath` (pkg/fieldpath/fieldpath.go `ExtractFieldPathAsString`).
fn field_value(pod: &Value, field: &str) -> anyhow::Result<String> {
    // metadata.labels['key'] and metadata.annotations['key'].
    if let Some((map, rest)) = field.split_once("['")
        && let Some(key) = rest.strip_suffix("']")
        && matches!(map, "metadata.labels" | "metadata.annotations")
    {
        let map = map.trim_start_matches("metadata.");
        return Ok(pod["metadata"][map][key].as_str().unwrap_or("").to_string());
    }
    let pointer = match field {
        "metadata.name"
        | "metadata.namespace"
        | "metadata.uid"
        | "spec.nodeName"
        | "spec.serviceAccountName"
        | "status.hostIP"
        | "status.podIP" => {
            format!("/{}", field.replace('.', "/"))
        }
        "metadata.labels" | "metadata.annotations" => {
            let map = field.trim_start_matches("metadata.");
            // The upstream format: sorted `key="value"` lines, values quoted like Go's %q.
            let mut lines: Vec<String> = pod["metadata"][map]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", Value::String(v.as_str().unwrap_or("").into())))
                .collect();
            lines.sort();
            return Ok(lines.join("\n"));
        }
        _ => bail!("unsupported downward API field {field:?}"),
    };
    Ok(text(pod, &pointer).to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn jti_is_read_from_the_payload() {
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"jti":"abc-123"}"#);
        assert_eq!(jti_of(&format!("h.{payload}.sig")), "abc-123");
        assert_eq!(jti_of("not a jwt"), "-");
    }

    #[test]
    fn downward_api_fields() {
        let pod = json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "u-1",
                         "labels": {"b": "2", "a": "x\"y"}, "annotations": {}},
            "spec": {"nodeName": "n1", "serviceAccountName": "app"},
        });
        assert_eq!(field_value(&pod, "metadata.namespace").unwrap(), "default");
        assert_eq!(field_value(&pod, "metadata.uid").unwrap(), "u-1");
        assert_eq!(field_value(&pod, "spec.serviceAccountName").unwrap(), "app");
        assert_eq!(field_value(&pod, "metadata.labels['b']").unwrap(), "2");
        assert_eq!(
            field_value(&pod, "metadata.labels").unwrap(),
            "a=\"x\\\"y\"\nb=\"2\""
        );
        assert!(field_value(&pod, "spec.containers").is_err());
    }

    #[test]
    fn configmap_and_secret_items() {
        let data: BTreeMap<String, Vec<u8>> = [
            ("ca.crt".to_string(), b"CA".to_vec()),
            ("other".to_string(), b"o".to_vec()),
        ]
        .into();
        let source =
            json!({"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt", "mode": 256}]});
        let files = key_files(&source, "x", true, &data, 0o644).unwrap();
        assert_eq!(files.len(), 1);
        assert_eq!((files[0].path.as_str(), files[0].mode), ("ca.crt", 0o400));
        let all = key_files(&json!({"name": "x"}), "x", true, &data, 0o600).unwrap();
        assert_eq!(all.len(), 2);
        let missing = json!({"name": "x", "items": [{"key": "nope", "path": "p"}]});
        assert!(key_files(&missing, "x", true, &data, 0o644).is_err());
        let optional = json!({"name": "x", "optional": true, "items": [{"key": "nope", "path": "p"}]});
        assert!(key_files(&optional, "x", true, &data, 0o644).unwrap().is_empty());
        let escape = json!({"name": "x", "items": [{"key": "other", "path": "../../etc/x"}]});
        assert!(key_files(&escape, "x", true, &data, 0o644).is_err());
        assert!(mode(Some(&json!(420)), 0).unwrap() == 0o644);
        assert!(mode(Some(&json!(4096)), 0).is_err());
    }

    #[test]
    fn secret_and_configmap_volumes_select_rename_and_mode_keys() {
        let pod = json!({
            "metadata": {"namespace": "ns"},
            "spec": {"serviceAccountName": "app", "volumes": [
                {"name": "token", "secret": {"secretName": "default-token-abcde", "defaultMode": 256,
                    "items": [{"key": "token", "path": "token"}, {"key": "ca.crt", "path": "certs/ca.crt", "mode": 292}]}},
                {"name": "settings", "configMap": {"name": "app-config", "optional": true}},
                {"name": "api", "projected": {"sources": [
                    {"serviceAccountToken": {"path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt"}},
                    {"secret": {"name": "extra"}},
                ]}},
                {"name": "scratch", "emptyDir": {}},
            ]},
        });
        let kinds: Vec<(&str, VolumeKind)> =
            agent_volumes(&pod).map(|(v, k)| (text(v, "/name"), k)).collect();
        assert_eq!(
            kinds,
            [
                ("token", VolumeKind::Secret),
                ("settings", VolumeKind::ConfigMap),
                ("api", VolumeKind::Projected),
            ]
        );
        assert_eq!(VolumeKind::Secret.plugin_dir(), "kubernetes.io~secret");
        assert_eq!(VolumeKind::ConfigMap.plugin_dir(), "kubernetes.io~configmap");
        let volumes = pod["spec"]["volumes"].as_array().unwrap();
        let r = |plural: &'static str, name: &str| ("ns".to_string(), plural, name.to_string());
        assert_eq!(
            volume_refs(&pod, &volumes[0]),
            [r("secrets", "default-token-abcde")]
        );
        assert_eq!(volume_refs(&pod, &volumes[1]), [r("configmaps", "app-config")]);
        assert_eq!(
            volume_refs(&pod, &volumes[2]),
            [
                r("serviceaccounts", "app"),
                r("configmaps", "kube-root-ca.crt"),
                r("secrets", "extra")
            ]
        );

        // A Secret's data is base64; items pick and rename keys, the volume's defaultMode
        // applies where an item has no mode.
        let secret = json!({"data": {"token": "dG9r", "ca.crt": "Q0E=", "namespace": "bnM="}});
        let data = object_data("secrets", &secret).unwrap();
        let source = &volumes[0]["secret"];
        let default_mode = mode(source.get("defaultMode"), 0o644).unwrap();
        let files = key_files(source, "default-token-abcde", true, &data, default_mode).unwrap();
        let got: Vec<(&str, &[u8], u32)> = files
            .iter()
            .map(|f| (f.path.as_str(), f.data.as_slice(), f.mode))
            .collect();
        assert_eq!(
            got,
            [("token", &b"tok"[..], 0o400), ("certs/ca.crt", &b"CA"[..], 0o444)]
        );
        // Without items every key is written, at 0644 unless defaultMode says otherwise.
        let all = key_files(&json!({"secretName": "s"}), "s", true, &data, 0o644).unwrap();
        let paths: Vec<&str> = all.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["ca.crt", "namespace", "token"]);
        assert!(all.iter().all(|f| f.mode == 0o644));
        // A ConfigMap's data is text, binaryData base64.
        let cm = json!({"data": {"a": "plain"}, "binaryData": {"b": "AAE="}});
        let data = object_data("configmaps", &cm).unwrap();
        assert_eq!(data["a"], b"plain");
        assert_eq!(data["b"], [0, 1]);
        assert!(object_data("secrets", &json!({"data": {"k": "not base64!"}})).is_err());
        // A missing optional object is an empty volume; a missing key in an existing
        // object is an error unless optional.
        assert!(
            key_files(
                &volumes[1]["configMap"],
                "app-config",
                false,
                &BTreeMap::new(),
                0o644
            )
            .unwrap()
            .is_empty()
        );
        let missing_key = json!({"name": "app-config", "items": [{"key": "gone", "path": "p"}]});
        let err = key_files(&missing_key, "app-config", true, &data, 0o644).unwrap_err();
        assert!(err.to_string().contains("\"gone\""), "{err}");
        assert_eq!(singular("secrets"), "secret");
        assert_eq!(singular("configmaps"), "configmap");
        assert!(is_optional(&volumes[1]["configMap"]));
        assert!(!is_optional(source));
    }

    #[test]
    fn flags() {
        use clap::Parser;
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            options: AgentOptions,
        }
        let cli = Cli::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--node-name",
            "n1",
            "--root",
            "/r",
            "--token-refresh-fraction",
            "0.01",
            "--metrics-bind-address",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(cli.options.refresh_fraction, 0.01);
        assert_eq!(cli.options.max_refresh, Duration::from_secs(86_400));
        assert!(cli.options.metrics_address.is_some());
        let cli = Cli::try_parse_from([
            "x",
            "--kubeconfig",
            "k",
            "--node-name",
            "n1",
            "--root",
            "/r",
            "--max-refresh-seconds",
            "5",
        ])
        .unwrap();
        assert_eq!(cli.options.refresh_fraction, 0.8);
        assert_eq!(cli.options.max_refresh, Duration::from_secs(5));
        assert!(
            Cli::try_parse_from([
                "x",
                "--kubeconfig",
                "k",
                "--node-name",
                "n",
                "--root",
                "r",
                "--refresh-fraction",
                "0"
            ])
            .is_err()
        );
    }
}
