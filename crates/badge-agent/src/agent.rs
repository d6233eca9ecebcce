//! The main loop: register the Node, list and watch the node's pods, keep one watch per
//! object a volume reads, and rebuild each volume when it is due (its token's refresh
//! time, a change to what it reads, or the periodic resync), with backoff after failures.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use badge_client::{Client, error_text};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::metrics::{Counters, bump};
use crate::options::AgentOptions;
use crate::tokens::CachedToken;
use crate::volumes::{ObjectRef, VolumeKind, agent_volumes, text, volume_refs};
use crate::{clock, nodelease, schedule, termination, writer};

/// How often a volume is rebuilt even when its tokens are fresh, so ConfigMap and Secret
/// changes reach the files (the kubelet's periodic volume resync).
const RESYNC: Duration = Duration::from_secs(60);
/// The longest wait between retries after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often the counters are logged.
const LOG_COUNTERS: Duration = Duration::from_secs(300);

/// What does not change while the agent runs.
pub(crate) struct Ctx {
    pub(crate) client: Arc<Client>,
    pub(crate) options: AgentOptions,
    pub(crate) counters: Arc<Counters>,
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

pub(crate) struct Agent {
    ctx: Ctx,
    /// Whether the API server answers (see [`crate::reachability`]).
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

impl Agent {
    pub(crate) fn new(client: Arc<Client>, options: AgentOptions, counters: Arc<Counters>) -> Agent {
        let (changed_tx, changed) = tokio::sync::mpsc::channel(1024);
        Agent {
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
        }
    }

    pub(crate) async fn run(&mut self) {
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
}
