//! `/metrics` in Prometheus' text format: upstream's request, authentication, ServiceAccount
//! token and audit metrics under their upstream names, and badge's own token metrics.
//! Counting is lock-free: atomics, found through a read-mostly map of label sets that takes
//! its write lock only the first time a label set is seen.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use badge_api::request_info::RequestInfo;
use parking_lot::RwLock;

/// Upstream's `apiserver_request_duration_seconds` buckets.
const DURATION_BUCKETS: [f64; 23] = [
    0.005, 0.025, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 15.0,
    20.0, 30.0, 45.0, 60.0,
];
/// Label sets kept per family; past it new ones are counted under `other`, so clients cannot
/// grow the registry without bound.
const MAX_SERIES: usize = 2_000;
/// Non-resource paths counted under their own name (the rest under none).
const NAMED_PATHS: [&str; 5] = ["/healthz", "/livez", "/readyz", "/metrics", "/version"];

/// The labels of a request, without the response code.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestLabels<'a> {
    /// The Kubernetes verb, as `apiserver_request_total` labels it.
    pub verb: &'static str,
    /// The API group.
    pub group: &'a str,
    /// The API version.
    pub version: &'a str,
    /// The resource.
    pub resource: &'a str,
    /// The subresource.
    pub subresource: &'a str,
    /// `resource`, `namespace` or `cluster`, as upstream scopes it; "" outside the API.
    pub scope: &'static str,
    /// `apiserver`; "" outside the API.
    pub component: &'static str,
}

/// The verb label, as upstream's `CleanVerb` spells it.
fn verb_label(info: &RequestInfo, apply: bool) -> &'static str {
    match info.verb.as_str() {
        "get" => "GET",
        "list" => "LIST",
        "watch" => "WATCH",
        "create" | "post" => "POST",
        "update" | "put" => "PUT",
        "patch" if apply => "APPLY",
        "patch" => "PATCH",
        "delete" => "DELETE",
        "deletecollection" => "DELETECOLLECTION",
        "head" => "HEAD",
        "options" => "OPTIONS",
        _ => "other",
    }
}

impl<'a> RequestLabels<'a> {
    /// The labels upstream's `MonitorRequest` gives a request: the verb as `CleanVerb` spells
    /// it, the scope as `CleanScope`; `known` says whether the resource exists (an unknown
    /// one is not a label of its own). Borrowed from the request: nothing is allocated.
    pub fn of(info: &'a RequestInfo, apply: bool, known: bool) -> RequestLabels<'a> {
        let verb = verb_label(info, apply);
        if !info.is_resource_request {
            let path = NAMED_PATHS
                .iter()
                .find(|p| {
                    info.path
                        .strip_prefix(**p)
                        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                })
                .map_or("", |p| *p);
            return RequestLabels {
                verb,
                group: "",
                version: "",
                resource: "",
                subresource: path,
                scope: "",
                component: "",
            };
        }
        let scope = if !info.name.is_empty() || info.verb == "create" {
            "resource"
        } else if !info.namespace.is_empty() {
            "namespace"
        } else {
            "cluster"
        };
        let (group, version, resource, subresource) = if known {
            (
                info.api_group.as_str(),
                info.api_version.as_str(),
                info.resource.as_str(),
                info.subresource.as_str(),
            )
        } else {
            ("", "", "", "")
        };
        RequestLabels {
            verb,
            group,
            version,
            resource,
            subresource,
            scope,
            component: "apiserver",
        }
    }

    fn other() -> RequestLabels<'static> {
        RequestLabels {
            verb: "other",
            group: "",
            version: "",
            resource: "",
            subresource: "",
            scope: "",
            component: "",
        }
    }

    fn owned(&self) -> OwnedLabels {
        OwnedLabels {
            verb: self.verb,
            group: self.group.to_string(),
            version: self.version.to_string(),
            resource: self.resource.to_string(),
            subresource: self.subresource.to_string(),
            scope: self.scope,
            component: self.component,
        }
    }

    fn key(&self) -> u64 {
        use std::hash::{BuildHasher, BuildHasherDefault};
        BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(self)
    }
}

/// Labels as the registry keeps them.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwnedLabels {
    verb: &'static str,
    group: String,
    version: String,
    resource: String,
    subresource: String,
    scope: &'static str,
    component: &'static str,
}

impl OwnedLabels {
    fn borrowed(&self) -> RequestLabels<'_> {
        RequestLabels {
            verb: self.verb,
            group: &self.group,
            version: &self.version,
            resource: &self.resource,
            subresource: &self.subresource,
            scope: self.scope,
            component: self.component,
        }
    }
}

/// The counts of one request label set.
pub struct RequestSeries {
    /// By response code, 100 to 599.
    codes: Box<[AtomicU64]>,
    buckets: [AtomicU64; DURATION_BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_nanos: AtomicU64,
}

impl RequestSeries {
    /// Counts a served request and how long it took.
    pub fn observe(&self, code: u16, elapsed: Duration) {
        if let Some(counter) = usize::from(code).checked_sub(100).and_then(|i| self.codes.get(i)) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = elapsed.as_secs_f64();
        if let Some(bucket) = DURATION_BUCKETS.iter().position(|le| seconds <= *le) {
            self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        }
        self.duration_count.fetch_add(1, Ordering::Relaxed);
        self.duration_sum_nanos.fetch_add(
            u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    fn new() -> RequestSeries {
        RequestSeries {
            codes: (100..600).map(|_| AtomicU64::new(0)).collect(),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            duration_count: AtomicU64::new(0),
            duration_sum_nanos: AtomicU64::new(0),
        }
    }
}

/// A label set and its counters.
type LabeledSeries = (OwnedLabels, Arc<RequestSeries>);

/// Counters by one label value.
#[derive(Default)]
struct LabeledCounter(RwLock<HashMap<String, Arc<AtomicU64>>>);

impl LabeledCounter {
    fn add(&self, label: &str, n: u64) {
        if let Some(counter) = self.0.read().get(label) {
            counter.fetch_add(n, Ordering::Relaxed);
            return;
        }
        let mut counters = self.0.write();
        let label = if counters.len() >= MAX_SERIES && !counters.contains_key(label) {
            "other"
        } else {
            label
        };
        counters
            .entry(label.to_string())
            .or_default()
            .fetch_add(n, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Vec<(String, u64)> {
        let mut values: Vec<(String, u64)> = self
            .0
            .read()
            .iter()
            .map(|(label, n)| (label.clone(), n.load(Ordering::Relaxed)))
            .collect();
        values.sort();
        values
    }
}

/// The server's metrics.
#[derive(Default)]
pub struct Metrics {
    /// By the hash of the labels; the labels are compared too, so a collision only costs a
    /// second entry.
    requests: RwLock<HashMap<u64, Vec<LabeledSeries>>>,
    /// Requests authenticated.
    pub authentication_success: AtomicU64,
    /// Requests without a credential refused.
    pub authentication_failure: AtomicU64,
    /// Requests whose credential failed.
    pub authentication_error: AtomicU64,
    tokens_issued: LabeledCounter,
    /// Tokens revoked; counted by whatever revokes them.
    pub token_revocations: AtomicU64,
    /// Audit events handed to the backend (`apiserver_audit_event_total`).
    pub audit_events: AtomicU64,
    /// Audit events lost: the queue was full or the write failed.
    pub audit_events_dropped: AtomicU64,
}

/// How an authentication attempt ended (`authentication_attempts{result}`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthenticationResult {
    /// A credential, or an anonymous request, was accepted.
    Success,
    /// No credential, and anonymous requests are off.
    Failure,
    /// A credential that failed.
    Error,
}

impl Metrics {
    /// The counters of a request's label set.
    pub fn request_series(&self, labels: RequestLabels<'_>) -> Arc<RequestSeries> {
        let key = labels.key();
        if let Some(found) = self.requests.read().get(&key).and_then(|entries| {
            entries
                .iter()
                .find(|(owned, _)| owned.borrowed() == labels)
                .map(|(_, series)| series.clone())
        }) {
            return found;
        }
        let mut requests = self.requests.write();
        let count: usize = requests.values().map(Vec::len).sum();
        let (key, labels) = if count >= MAX_SERIES {
            let other = RequestLabels::other();
            (other.key(), other)
        } else {
            (key, labels)
        };
        let entries = requests.entry(key).or_default();
        if let Some((_, series)) = entries.iter().find(|(owned, _)| owned.borrowed() == labels) {
            return series.clone();
        }
        let series = Arc::new(RequestSeries::new());
        entries.push((labels.owned(), series.clone()));
        series
    }

    /// Counts a served request.
    pub fn observe_request(&self, labels: RequestLabels<'_>, code: u16, elapsed: Duration) {
        self.request_series(labels).observe(code, elapsed);
    }

    /// Counts one authentication attempt.
    pub fn authentication(&self, result: AuthenticationResult) {
        let counter = match result {
            AuthenticationResult::Success => &self.authentication_success,
            AuthenticationResult::Failure => &self.authentication_failure,
            AuthenticationResult::Error => &self.authentication_error,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one token issued in `namespace`.
    pub fn token_issued(&self, namespace: &str) {
        self.tokens_issued.add(namespace, 1);
    }

    /// The hook for whatever revokes tokens.
    pub fn token_revoked(&self) {
        self.token_revocations.fetch_add(1, Ordering::Relaxed);
    }

    /// The request families, in the text format.
    pub fn render(&self, out: &mut String) {
        let mut series: Vec<LabeledSeries> = self
            .requests
            .read()
            .values()
            .flatten()
            .map(|(labels, series)| (labels.clone(), series.clone()))
            .collect();
        series.sort_by(|a, b| {
            (a.0.verb, &a.0.group, &a.0.resource, &a.0.subresource, a.0.scope).cmp(&(
                b.0.verb,
                &b.0.group,
                &b.0.resource,
                &b.0.subresource,
                b.0.scope,
            ))
        });
        header(
            out,
            "apiserver_request_total",
            "counter",
            "Counter of apiserver requests broken out for each verb, group, version, resource, scope, component, and HTTP response code.",
        );
        for (labels, s) in &series {
            for (i, count) in s.codes.iter().enumerate() {
                let count = count.load(Ordering::Relaxed);
                if count > 0 {
                    let code = (i + 100).to_string();
                    sample(
                        out,
                        "apiserver_request_total",
                        &request_labels(labels, Some(&code)),
                        count as f64,
                    );
                }
            }
        }
        header(
            out,
            "apiserver_request_duration_seconds",
            "histogram",
            "Response latency distribution in seconds for each verb, group, version, resource, subresource, scope and component.",
        );
        for (labels, s) in &series {
            let count = s.duration_count.load(Ordering::Relaxed);
            if count == 0 {
                continue;
            }
            let base = request_labels(labels, None);
            let mut cumulative = 0;
            for (le, bucket) in DURATION_BUCKETS.iter().zip(&s.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let mut with_le = base.clone();
                with_le.push(("le", le.to_string()));
                sample(
                    out,
                    "apiserver_request_duration_seconds_bucket",
                    &with_le,
                    cumulative as f64,
                );
            }
            let mut with_le = base.clone();
            with_le.push(("le", "+Inf".into()));
            sample(
                out,
                "apiserver_request_duration_seconds_bucket",
                &with_le,
                count as f64,
            );
            let sum = s.duration_sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
            sample(out, "apiserver_request_duration_seconds_sum", &base, sum);
            sample(
                out,
                "apiserver_request_duration_seconds_count",
                &base,
                count as f64,
            );
        }
        header(
            out,
            "authentication_attempts",
            "counter",
            "Counter of authenticated attempts.",
        );
        for (result, counter) in [
            ("error", &self.authentication_error),
            ("failure", &self.authentication_failure),
            ("success", &self.authentication_success),
        ] {
            sample(
                out,
                "authentication_attempts",
                &[("result", result.to_string())],
                counter.load(Ordering::Relaxed) as f64,
            );
        }
        header(
            out,
            "badge_tokens_issued_total",
            "counter",
            "ServiceAccount tokens issued through TokenRequest, by namespace.",
        );
        for (namespace, count) in self.tokens_issued.snapshot() {
            sample(
                out,
                "badge_tokens_issued_total",
                &[("namespace", namespace)],
                count as f64,
            );
        }
        counter(
            out,
            "badge_token_revocations_total",
            "ServiceAccount tokens revoked.",
            self.token_revocations.load(Ordering::Relaxed),
        );
        counter(
            out,
            "apiserver_audit_event_total",
            "Counter of audit events generated and sent to the audit backend.",
            self.audit_events.load(Ordering::Relaxed),
        );
        counter(
            out,
            "badge_audit_events_dropped_total",
            "Audit events lost because the audit queue was full or the log could not be written.",
            self.audit_events_dropped.load(Ordering::Relaxed),
        );
    }
}

fn request_labels(labels: &OwnedLabels, code: Option<&str>) -> Vec<(&'static str, String)> {
    let mut out = Vec::with_capacity(9);
    if let Some(code) = code {
        out.push(("code", code.to_string()));
    }
    out.extend([
        ("component", labels.component.to_string()),
        ("group", labels.group.clone()),
        ("resource", labels.resource.clone()),
        ("scope", labels.scope.to_string()),
        ("subresource", labels.subresource.clone()),
        ("verb", labels.verb.to_string()),
        ("version", labels.version.clone()),
    ]);
    out
}

/// `# HELP` and `# TYPE` lines.
pub fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// One unlabeled counter family.
pub fn counter(out: &mut String, name: &str, help: &str, value: u64) {
    header(out, name, "counter", help);
    sample(out, name, &[], value as f64);
}

/// One sample line, its label values escaped as the text format requires.
pub fn sample(out: &mut String, name: &str, labels: &[(&str, String)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (label, value)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let escaped = value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            let _ = write!(out, "{label}=\"{escaped}\"");
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn labels(method: &str, path: &str, query: Option<&str>) -> OwnedLabels {
        let info = badge_api::request_info::parse(method, path, query).unwrap();
        RequestLabels::of(&info, false, true).owned()
    }

    #[test]
    fn requests_are_labelled_as_upstream_labels_them() {
        let list = labels("GET", "/api/v1/namespaces/a/pods", None);
        assert_eq!((list.verb, list.scope), ("LIST", "namespace"));
        let watch = labels("GET", "/api/v1/pods", Some("watch=true"));
        assert_eq!((watch.verb, watch.scope), ("WATCH", "cluster"));
        let token = labels("POST", "/api/v1/namespaces/a/serviceaccounts/x/token", None);
        assert_eq!(
            (
                token.verb,
                token.resource.as_str(),
                token.subresource.as_str(),
                token.scope
            ),
            ("POST", "serviceaccounts", "token", "resource")
        );
        let create = labels("POST", "/api/v1/namespaces/a/configmaps", None);
        assert_eq!(create.scope, "resource");
        let health = labels("GET", "/readyz/etcd", None);
        assert_eq!(
            (health.verb, health.subresource.as_str(), health.component),
            ("GET", "/readyz", "")
        );
        assert_eq!(labels("GET", "/readyzx", None).subresource, "");
        let info = badge_api::request_info::parse("PATCH", "/api/v1/namespaces/a/pods/p", None).unwrap();
        assert_eq!(RequestLabels::of(&info, true, true).verb, "APPLY");
        let unknown = badge_api::request_info::parse("GET", "/api/v1/nothings", None).unwrap();
        assert_eq!(RequestLabels::of(&unknown, false, false).resource, "");
    }

    #[test]
    fn the_text_format_counts_codes_and_cumulative_buckets() {
        let metrics = Metrics::default();
        let list = labels("GET", "/api/v1/namespaces", None);
        metrics.observe_request(list.borrowed(), 200, Duration::from_millis(3));
        metrics.observe_request(list.borrowed(), 200, Duration::from_millis(30));
        metrics.observe_request(list.borrowed(), 403, Duration::from_millis(30));
        metrics.token_issued("default");
        metrics.token_issued("default");
        metrics.token_issued("kube-\"system");
        metrics.authentication(AuthenticationResult::Error);
        let mut text = String::new();
        metrics.render(&mut text);
        let base = "component=\"apiserver\",group=\"\",resource=\"namespaces\",scope=\"cluster\",subresource=\"\",verb=\"LIST\",version=\"v1\"";
        assert!(
            text.contains(&format!("apiserver_request_total{{code=\"200\",{base}}} 2\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!("apiserver_request_total{{code=\"403\",{base}}} 1\n")),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{base},le=\"0.005\"}} 1\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{base},le=\"0.05\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "apiserver_request_duration_seconds_bucket{{{base},le=\"+Inf\"}} 3\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("apiserver_request_duration_seconds_count{{{base}}} 3\n")),
            "{text}"
        );
        assert!(
            text.contains("badge_tokens_issued_total{namespace=\"default\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("badge_tokens_issued_total{namespace=\"kube-\\\"system\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("authentication_attempts{result=\"error\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE apiserver_request_duration_seconds histogram\n"),
            "{text}"
        );
    }

    #[test]
    fn label_sets_past_the_limit_fold_into_other() {
        let metrics = Metrics::default();
        for i in 0..MAX_SERIES + 10 {
            metrics.token_issued(&format!("ns-{i}"));
        }
        let snapshot = metrics.tokens_issued.snapshot();
        assert_eq!(snapshot.len(), MAX_SERIES + 1);
        assert_eq!(snapshot.iter().find(|(l, _)| l == "other").unwrap().1, 10);
    }
}
