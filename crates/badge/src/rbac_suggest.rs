//! `badge rbac suggest SERVICEACCOUNT -n NS [--since 7d]`: least privilege from the audit log.
//! Prints the Roles (per namespace used) and a ClusterRole (cluster-scoped resources, lists
//! across namespaces, non-resource URLs) with their bindings, granting exactly the verbs,
//! resources (with subresources) and names the identity used; then lists on stderr what it
//! holds through its current bindings but did not use.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use badge_client::error_text;

use crate::token_cmd::Connection;

#[derive(Subcommand)]
pub(crate) enum RbacCommand {
    /// Suggest the least RBAC a ServiceAccount needs, from what it did.
    Suggest(SuggestOptions),
}

#[derive(Args)]
pub(crate) struct SuggestOptions {
    /// The ServiceAccount's name.
    service_account: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Only requests this recent (`90s`, `15m`, `12h`, `7d`).
    #[arg(long, default_value = "7d", value_parser = crate::usage_cmd::parse_duration)]
    since: i64,
    /// The audit log (default: <data-dir>/audit.log).
    #[arg(long)]
    audit_log: Option<PathBuf>,
    #[command(flatten)]
    connection: Connection,
}

/// Verbs whose requests name one object, so a rule can list resourceNames.
const NAMED_VERBS: &[&str] = &["get", "update", "patch", "delete"];

/// Where a rule goes: a namespace's Role, or the ClusterRole ("").
type Scope = String;
/// (apiGroup, resource[/subresource]) or ("", non-resource URL).
type Target = (String, String);
/// The names requested per verb; None when some request of the verb named none.
type NamesByVerb = BTreeMap<String, Option<BTreeSet<String>>>;
/// (apiGroup, resource, names) of one rule.
type RuleKey = (String, String, Option<BTreeSet<String>>);

/// What the identity did, by scope.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Used {
    /// scope → (group, resource) → verb → names (None: some request named none).
    pub resources: BTreeMap<Scope, BTreeMap<Target, NamesByVerb>>,
    /// non-resource URL → verbs.
    pub non_resource: BTreeMap<String, BTreeSet<String>>,
}

/// The requests `username` made since `since` that were allowed, from audit.k8s.io/v1 events.
pub(crate) fn used(events: impl Iterator<Item = Value>, username: &str, since: jiff::Timestamp) -> Used {
    let mut used = Used::default();
    for event in events {
        let completed = event["stage"] == "ResponseComplete";
        let by = event.pointer("/user/username").and_then(Value::as_str) == Some(username);
        let code = event
            .pointer("/responseStatus/code")
            .and_then(Value::as_i64)
            .unwrap_or(200);
        let when = event["stageTimestamp"]
            .as_str()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok());
        if !completed || !by || code == 401 || code == 403 || when.is_none_or(|t| t < since) {
            continue;
        }
        let verb = event["verb"].as_str().unwrap_or("").to_string();
        let Some(object) = event.get("objectRef").filter(|o| o.is_object()) else {
            let path = event["requestURI"].as_str().unwrap_or("");
            let path = path.split('?').next().unwrap_or(path).to_string();
            used.non_resource.entry(path).or_default().insert(verb);
            continue;
        };
        let text = |key: &str| object.get(key).and_then(Value::as_str).unwrap_or("").to_string();
        let resource = match text("subresource").as_str() {
            "" => text("resource"),
            sub => format!("{}/{sub}", text("resource")),
        };
        let name = text("name");
        let names = used
            .resources
            .entry(text("namespace"))
            .or_default()
            .entry((text("apiGroup"), resource))
            .or_default()
            .entry(verb.clone())
            .or_insert_with(|| Some(BTreeSet::new()));
        match names {
            Some(set) if !name.is_empty() && NAMED_VERBS.contains(&verb.as_str()) => {
                set.insert(name);
            }
            _ => *names = None,
        }
    }
    used
}

/// Rules for one scope: one per (group, resource, names), verbs merged.
fn rules(targets: &BTreeMap<Target, NamesByVerb>) -> Vec<Value> {
    let mut merged: BTreeMap<RuleKey, BTreeSet<String>> = BTreeMap::new();
    for ((group, resource), verbs) in targets {
        for (verb, names) in verbs {
            merged
                .entry((group.clone(), resource.clone(), names.clone()))
                .or_default()
                .insert(verb.clone());
        }
    }
    merged
        .into_iter()
        .map(|((group, resource, names), verbs)| {
            let mut rule = json!({"apiGroups": [group], "resources": [resource], "verbs": verbs});
            if let Some(names) = names {
                rule["resourceNames"] = json!(names);
            }
            rule
        })
        .collect()
}

/// The Roles, ClusterRole and bindings granting what was used, as objects to apply.
pub(crate) fn suggestion(used: &Used, namespace: &str, service_account: &str) -> Vec<Value> {
    let name = format!("{service_account}-suggested");
    let subject = json!([{"kind": "ServiceAccount", "name": service_account, "namespace": namespace}]);
    let rbac = "rbac.authorization.k8s.io/v1";
    let mut objects = Vec::new();
    for (scope, targets) in used.resources.iter().filter(|(scope, _)| !scope.is_empty()) {
        objects.push(json!({"apiVersion": rbac, "kind": "Role",
            "metadata": {"name": name, "namespace": scope}, "rules": rules(targets)}));
        objects.push(json!({"apiVersion": rbac, "kind": "RoleBinding",
            "metadata": {"name": name, "namespace": scope},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
            "subjects": subject}));
    }
    let mut cluster_rules = used.resources.get("").map(rules).unwrap_or_default();
    for (path, verbs) in &used.non_resource {
        cluster_rules.push(json!({"nonResourceURLs": [path], "verbs": verbs}));
    }
    if !cluster_rules.is_empty() {
        let cluster_name = format!("{namespace}:{name}");
        objects.push(json!({"apiVersion": rbac, "kind": "ClusterRole",
            "metadata": {"name": cluster_name}, "rules": cluster_rules}));
        objects.push(json!({"apiVersion": rbac, "kind": "ClusterRoleBinding",
            "metadata": {"name": cluster_name},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": cluster_name},
            "subjects": subject}));
    }
    objects
}

/// Whether the identity used `verb` on `group`/`resource` anywhere (wildcards match).
fn was_used(used: &Used, group: &str, resource: &str, verb: &str) -> bool {
    let any = |want: &str, got: &str| want == "*" || want == got;
    used.resources.values().flatten().any(|((g, r), verbs)| {
        any(group, g)
            && (any(resource, r)
                || resource
                    .strip_suffix("/*")
                    .is_some_and(|base| r.starts_with(&format!("{base}/"))))
            && verbs.keys().any(|v| any(verb, v))
    })
}

/// The (binding, group, resource, verb) held through `rules` but never used.
pub(crate) fn unused(used: &Used, binding: &str, rules: &[Value]) -> Vec<String> {
    let list = |rule: &Value, key: &str| -> Vec<String> {
        rule.get(key)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(String::from)).collect())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for rule in rules {
        for verb in list(rule, "verbs") {
            for path in list(rule, "nonResourceURLs") {
                if !used.non_resource.iter().any(|(p, verbs)| {
                    (path == *p || path.strip_suffix('*').is_some_and(|pre| p.starts_with(pre)))
                        && (verb == "*" || verbs.contains(&verb))
                }) {
                    out.push(format!("{binding}: {verb} {path}"));
                }
            }
            for group in list(rule, "apiGroups") {
                for resource in list(rule, "resources") {
                    if !was_used(used, &group, &resource, &verb) {
                        let shown = if group.is_empty() {
                            resource.clone()
                        } else {
                            format!("{resource}.{group}")
                        };
                        out.push(format!("{binding}: {verb} {shown}"));
                    }
                }
            }
        }
    }
    out
}

pub(crate) async fn run(command: RbacCommand) -> anyhow::Result<()> {
    let RbacCommand::Suggest(options) = command;
    let path = options
        .audit_log
        .clone()
        .unwrap_or_else(|| options.connection.data_dir().join("audit.log"));
    let file = std::fs::File::open(&path)
        .map_err(|e| anyhow::anyhow!("reading the audit log {}: {e}", path.display()))?;
    let events = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str::<Value>(&line).ok());
    let username = format!(
        "system:serviceaccount:{}:{}",
        options.namespace, options.service_account
    );
    let since = jiff::Timestamp::from_second(badge_api::clock::now().as_second() - options.since)?;
    let used = used(events, &username, since);
    let objects = suggestion(&used, &options.namespace, &options.service_account);
    if objects.is_empty() {
        eprintln!("# {username} made no allowed request in that time");
    }
    for object in &objects {
        print!("---\n{}", serde_yaml_ng::to_string(object)?);
    }
    // What it holds but did not use, from its current bindings.
    match held(&options, &used).await {
        Ok(lines) if lines.is_empty() => eprintln!("# every permission held was used"),
        Ok(lines) => {
            eprintln!("# held but not used:");
            for line in lines {
                eprintln!("#   {line}");
            }
        }
        Err(e) => eprintln!("# could not read the current bindings: {e:#}"),
    }
    Ok(())
}

async fn held(options: &SuggestOptions, used: &Used) -> anyhow::Result<Vec<String>> {
    let client = options.connection.client()?;
    let get = |path: String| {
        let client = &client;
        async move {
            let (status, body) = client.request("GET", &path, None).await?;
            if status != 200 {
                anyhow::bail!("{path}: {}", error_text(&body));
            }
            anyhow::Ok(body)
        }
    };
    let rbac = "/apis/rbac.authorization.k8s.io/v1";
    let own_name = format!("{}-suggested", options.service_account);
    let mut bindings = Vec::new();
    for list in [
        get(format!("{rbac}/namespaces/{}/rolebindings", options.namespace)).await?,
        get(format!("{rbac}/clusterrolebindings")).await?,
    ] {
        bindings.extend(list["items"].as_array().cloned().unwrap_or_default());
    }
    let mut lines = Vec::new();
    for binding in bindings {
        let names_it = binding["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && s["name"] == options.service_account.as_str()
                && s["namespace"] == options.namespace.as_str()
        });
        let binding_name = badge_api::meta::name(&binding).to_string();
        if !names_it || binding_name.ends_with(&own_name) {
            continue;
        }
        let role = binding["roleRef"]["name"].as_str().unwrap_or("");
        let path = match (
            binding["roleRef"]["kind"].as_str(),
            badge_api::meta::namespace(&binding),
        ) {
            (Some("Role"), ns) => format!("{rbac}/namespaces/{ns}/roles/{role}"),
            _ => format!("{rbac}/clusterroles/{role}"),
        };
        let role = get(path).await?;
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        let kind = binding["kind"].as_str().unwrap_or("binding");
        lines.extend(unused(used, &format!("{kind} {binding_name}"), &rules));
    }
    Ok(lines)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn event(verb: &str, object: Value, code: i64) -> Value {
        json!({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
            "verb": verb, "user": {"username": "system:serviceaccount:shop:web"},
            "requestURI": "/x", "objectRef": object, "responseStatus": {"code": code},
            "stageTimestamp": "2026-06-01T00:00:00.000000Z"})
    }

    fn since() -> jiff::Timestamp {
        "2026-05-30T00:00:00Z".parse().unwrap()
    }

    #[test]
    fn exactly_the_verbs_resources_and_names_used() {
        let events = vec![
            event(
                "get",
                json!({"resource": "configmaps", "namespace": "shop", "name": "a", "apiVersion": "v1"}),
                200,
            ),
            event(
                "get",
                json!({"resource": "configmaps", "namespace": "shop", "name": "b", "apiVersion": "v1"}),
                404,
            ),
            event(
                "list",
                json!({"resource": "pods", "namespace": "shop", "apiVersion": "v1"}),
                200,
            ),
            event(
                "get",
                json!({"resource": "pods", "subresource": "log", "namespace": "shop", "name": "p", "apiVersion": "v1"}),
                200,
            ),
            event(
                "create",
                json!({"resource": "leases", "apiGroup": "coordination.k8s.io", "namespace": "shop", "apiVersion": "v1"}),
                201,
            ),
            event("list", json!({"resource": "nodes", "apiVersion": "v1"}), 200),
            // Refused, by another identity, at another stage, or too old: not counted.
            event(
                "delete",
                json!({"resource": "secrets", "namespace": "shop", "name": "s"}),
                403,
            ),
            json!({"stage": "ResponseComplete", "verb": "get", "user": {"username": "someone"},
                "objectRef": {"resource": "secrets", "namespace": "shop"}, "stageTimestamp": "2026-06-01T00:00:00Z"}),
            json!({"stage": "RequestReceived", "verb": "get", "user": {"username": "system:serviceaccount:shop:web"},
                "objectRef": {"resource": "secrets", "namespace": "shop"}, "stageTimestamp": "2026-06-01T00:00:00Z"}),
            json!({"stage": "ResponseComplete", "verb": "get", "user": {"username": "system:serviceaccount:shop:web"},
                "objectRef": {"resource": "secrets", "namespace": "shop"}, "stageTimestamp": "2026-01-01T00:00:00Z"}),
            json!({"stage": "ResponseComplete", "verb": "get", "user": {"username": "system:serviceaccount:shop:web"},
                "requestURI": "/version?timeout=32s", "responseStatus": {"code": 200}, "stageTimestamp": "2026-06-01T00:00:00Z"}),
        ];
        let used = used(events.into_iter(), "system:serviceaccount:shop:web", since());
        let objects = suggestion(&used, "shop", "web");
        let kinds: Vec<&str> = objects.iter().map(|o| o["kind"].as_str().unwrap()).collect();
        assert_eq!(
            kinds,
            ["Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"]
        );
        assert_eq!(
            objects[0]["rules"],
            json!([
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"], "resourceNames": ["a", "b"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]},
                {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"], "resourceNames": ["p"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
            ])
        );
        assert_eq!(
            objects[2]["rules"],
            json!([
                {"apiGroups": [""], "resources": ["nodes"], "verbs": ["list"]},
                {"nonResourceURLs": ["/version"], "verbs": ["get"]},
            ])
        );
        assert_eq!(
            objects[1]["subjects"][0],
            json!({"kind": "ServiceAccount", "name": "web", "namespace": "shop"})
        );
    }

    #[test]
    fn a_verb_used_without_a_name_is_granted_on_all_names() {
        let events = vec![
            event(
                "get",
                json!({"resource": "configmaps", "namespace": "shop", "name": "a"}),
                200,
            ),
            event("get", json!({"resource": "configmaps", "namespace": "shop"}), 200),
        ];
        let used = used(events.into_iter(), "system:serviceaccount:shop:web", since());
        let objects = suggestion(&used, "shop", "web");
        assert_eq!(
            objects[0]["rules"],
            json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}])
        );
    }

    #[test]
    fn what_is_held_but_unused_is_listed() {
        let events = vec![event(
            "get",
            json!({"resource": "configmaps", "namespace": "shop", "name": "a"}),
            200,
        )];
        let used = used(events.into_iter(), "system:serviceaccount:shop:web", since());
        let rules = vec![
            json!({"apiGroups": [""], "resources": ["configmaps", "secrets"], "verbs": ["get", "delete"]}),
        ];
        assert_eq!(
            unused(&used, "RoleBinding broad", &rules),
            [
                "RoleBinding broad: get secrets",
                "RoleBinding broad: delete configmaps",
                "RoleBinding broad: delete secrets"
            ]
        );
        let wildcard = vec![json!({"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]})];
        assert!(unused(&used, "b", &wildcard).is_empty());
    }
}
