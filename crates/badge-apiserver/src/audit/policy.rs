//! The audit policy: upstream's audit.k8s.io/v1 `Policy` (`pkg/apis/audit/v1/types.go`) and
//! its rule checker (`pkg/audit/policy/checker.go`). Rules are tried in order and the first
//! that matches decides the level and the stages left out; no match is level None.

use std::path::Path;

use badge_api::request_info::RequestInfo;
use badge_auth::UserInfo;
use serde::{Deserialize, Serialize};

/// How much of a request an event records (`Level`), in increasing order.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Nothing is recorded.
    None,
    /// The request's metadata (user, time, resource, verb), no bodies.
    Metadata,
    /// Metadata and the request body.
    Request,
    /// Metadata, the request body and the response body.
    RequestResponse,
}

impl Level {
    /// The level's name, as policies and events write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// A point in a request's handling where an event is written (`Stage`).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The request was received, before any handler ran.
    RequestReceived,
    /// The response headers were sent, the body still streaming (watches).
    ResponseStarted,
    /// The response was sent in full.
    ResponseComplete,
    /// The handler panicked.
    Panic,
}

impl Stage {
    /// The stage's name, as policies and events write it.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::RequestReceived => "RequestReceived",
            Stage::ResponseStarted => "ResponseStarted",
            Stage::ResponseComplete => "ResponseComplete",
            Stage::Panic => "Panic",
        }
    }
}

/// A group and resources of it a rule names (`GroupResources`).
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GroupResources {
    #[serde(default)]
    /// The API group, "" for the core group.
    pub group: String,
    #[serde(default)]
    /// Resources of the group; empty is all of them.
    pub resources: Vec<String>,
    #[serde(default)]
    /// Object names; empty is all.
    pub resource_names: Vec<String>,
}

/// One rule (`PolicyRule`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyRule {
    /// The level of the requests the rule matches.
    pub level: Level,
    #[serde(default)]
    /// User names the rule applies to; empty is all.
    pub users: Vec<String>,
    #[serde(default)]
    /// Groups the rule applies to; empty is all.
    pub user_groups: Vec<String>,
    #[serde(default)]
    /// Verbs the rule applies to; empty is all.
    pub verbs: Vec<String>,
    #[serde(default)]
    /// Resources the rule applies to; empty is all.
    pub resources: Vec<GroupResources>,
    #[serde(default)]
    /// Namespaces the rule applies to; empty is all.
    pub namespaces: Vec<String>,
    #[serde(default, rename = "nonResourceURLs")]
    /// Non-resource URL paths the rule applies to, `*` as a suffix wildcard.
    pub non_resource_urls: Vec<String>,
    #[serde(default)]
    /// Stages not recorded for matching requests, besides the policy's.
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    /// Overrides the policy's `omitManagedFields` for matching requests.
    pub omit_managed_fields: Option<bool>,
}

/// The policy file (`Policy`).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    #[serde(default)]
    /// Must be `audit.k8s.io/v1`.
    pub api_version: String,
    #[serde(default)]
    /// Must be `Policy`.
    pub kind: String,
    #[serde(default)]
    /// Object metadata, unused.
    pub metadata: Option<serde_json::Value>,
    #[serde(default)]
    /// Rules, the first matching one deciding.
    pub rules: Vec<PolicyRule>,
    #[serde(default)]
    /// Stages never recorded.
    pub omit_stages: Vec<Stage>,
    #[serde(default)]
    /// Leave `managedFields` out of recorded bodies.
    pub omit_managed_fields: bool,
}

/// What the policy decides for one request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// How much is recorded.
    pub level: Level,
    /// Stages not recorded.
    pub omit_stages: Vec<Stage>,
    /// Leave `managedFields` out of recorded bodies.
    pub omit_managed_fields: bool,
}

impl Decision {
    /// Whether an event of `stage` is recorded.
    pub fn records(&self, stage: Stage) -> bool {
        self.level > Level::None && !self.omit_stages.contains(&stage)
    }
}

/// The request attributes the policy looks at: the authenticated user and the request.
pub struct Attributes<'a> {
    /// None for a request that failed authentication.
    pub user: Option<&'a UserInfo>,
    /// The request.
    pub info: &'a RequestInfo,
}

impl Policy {
    /// The policy without a file: every request at Metadata. RequestReceived is left out:
    /// ResponseComplete repeats all it says and adds the outcome, and writing both would
    /// double the log's cost on the hot paths (a watch still has ResponseStarted).
    pub fn metadata_for_everything() -> Policy {
        Policy {
            api_version: "audit.k8s.io/v1".into(),
            kind: "Policy".into(),
            metadata: None,
            rules: vec![PolicyRule {
                level: Level::Metadata,
                users: Vec::new(),
                user_groups: Vec::new(),
                verbs: Vec::new(),
                resources: Vec::new(),
                namespaces: Vec::new(),
                non_resource_urls: Vec::new(),
                omit_stages: Vec::new(),
                omit_managed_fields: None,
            }],
            omit_stages: vec![Stage::RequestReceived],
            omit_managed_fields: false,
        }
    }

    /// Reads a policy file, YAML or JSON, validated as upstream's reader validates it.
    pub fn load(path: &Path) -> Result<Policy, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("failed to read file path {:?}: {e}", path.display()))?;
        Policy::parse(&text).map_err(|e| format!("failed decoding file {:?}: {e}", path.display()))
    }

    /// Parses a policy file; the error says what is wrong.
    pub fn parse(text: &str) -> Result<Policy, String> {
        let policy: Policy = serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?;
        policy.validate()?;
        Ok(policy)
    }

    fn validate(&self) -> Result<(), String> {
        if self.kind != "Policy" {
            return Err(format!("kind {:?} is not Policy", self.kind));
        }
        if self.api_version != "audit.k8s.io/v1" {
            return Err(format!(
                "apiVersion {:?} is not audit.k8s.io/v1",
                self.api_version
            ));
        }
        if self.rules.is_empty() {
            return Err("loaded illegal policy with 0 rules".into());
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if !rule.non_resource_urls.is_empty()
                && (!rule.resources.is_empty() || !rule.namespaces.is_empty())
            {
                return Err(format!(
                    "rules[{i}].nonResourceURLs: Invalid value: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
            for url in &rule.non_resource_urls {
                let star = url.find('*');
                if !url.starts_with('/') && url != "*" {
                    return Err(format!(
                        "rules[{i}].nonResourceURLs: Invalid value: {url:?}: non-resource URL rules must begin with a '/' character"
                    ));
                }
                if star.is_some_and(|at| at != url.len() - 1) {
                    return Err(format!(
                        "rules[{i}].nonResourceURLs: Invalid value: {url:?}: non-resource URL wildcards '*' must be the final character of the rule"
                    ));
                }
            }
            for (j, gr) in rule.resources.iter().enumerate() {
                if !gr.resource_names.is_empty() && gr.resources.is_empty() {
                    return Err(format!(
                        "rules[{i}].resources[{j}].resourceNames: Invalid value: using resourceNames requires at least one resource"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The level and omitted stages of a request: the first matching rule's, or None.
    pub fn evaluate(&self, attributes: &Attributes<'_>) -> Decision {
        for rule in &self.rules {
            if rule_matches(rule, attributes) {
                let mut omit_stages = self.omit_stages.clone();
                for stage in &rule.omit_stages {
                    if !omit_stages.contains(stage) {
                        omit_stages.push(*stage);
                    }
                }
                return Decision {
                    level: rule.level,
                    omit_stages,
                    omit_managed_fields: rule.omit_managed_fields.unwrap_or(self.omit_managed_fields),
                };
            }
        }
        Decision {
            level: Level::None,
            omit_stages: self.omit_stages.clone(),
            omit_managed_fields: self.omit_managed_fields,
        }
    }
}

fn has(list: &[String], value: &str) -> bool {
    list.iter().any(|s| s == value)
}

fn rule_matches(rule: &PolicyRule, a: &Attributes<'_>) -> bool {
    if !rule.users.is_empty() && !a.user.is_some_and(|u| has(&rule.users, &u.name)) {
        return false;
    }
    if !rule.user_groups.is_empty()
        && !a
            .user
            .is_some_and(|u| u.groups.iter().any(|g| has(&rule.user_groups, g)))
    {
        return false;
    }
    if !rule.verbs.is_empty() && !has(&rule.verbs, &a.info.verb) {
        return false;
    }
    if !rule.namespaces.is_empty() || !rule.resources.is_empty() {
        return matches_resource(rule, a.info);
    }
    if !rule.non_resource_urls.is_empty() {
        return !a.info.is_resource_request
            && rule
                .non_resource_urls
                .iter()
                .any(|spec| path_matches(&a.info.path, spec));
    }
    true
}

fn path_matches(path: &str, spec: &str) -> bool {
    if spec == "*" || spec == path {
        return true;
    }
    spec.strip_suffix('*')
        .is_some_and(|prefix| path.starts_with(prefix.trim_end_matches('*')))
}

fn matches_resource(rule: &PolicyRule, info: &RequestInfo) -> bool {
    if !info.is_resource_request {
        return false;
    }
    if !rule.namespaces.is_empty() && !has(&rule.namespaces, &info.namespace) {
        return false;
    }
    if rule.resources.is_empty() {
        return true;
    }
    let combined = if info.subresource.is_empty() {
        info.resource.clone()
    } else {
        format!("{}/{}", info.resource, info.subresource)
    };
    rule.resources.iter().any(|gr| {
        if gr.group != info.api_group {
            return false;
        }
        if gr.resources.is_empty() {
            return true;
        }
        if !gr.resource_names.is_empty() && !has(&gr.resource_names, &info.name) {
            return false;
        }
        gr.resources.iter().any(|res| {
            res == "*"
                || *res == combined
                || (!info.subresource.is_empty() && res.strip_prefix("*/") == Some(info.subresource.as_str()))
                || res.strip_suffix("/*") == Some(info.resource.as_str())
        })
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn info(method: &str, uri: &str) -> RequestInfo {
        let (path, query) = match uri.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (uri, None),
        };
        badge_api::request_info::parse(method, path, query).unwrap()
    }

    fn user(name: &str, groups: &[&str]) -> UserInfo {
        UserInfo {
            name: name.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..Default::default()
        }
    }

    fn level(policy: &Policy, user: &UserInfo, method: &str, path: &str) -> Level {
        let info = info(method, path);
        policy
            .evaluate(&Attributes {
                user: Some(user),
                info: &info,
            })
            .level
    }

    const POLICY: &str = r#"
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: None
    users: ["system:kube-proxy"]
    verbs: ["watch"]
  - level: None
    userGroups: ["system:nodes"]
    nonResourceURLs: ["/healthz*", "/version"]
  - level: Metadata
    resources:
      - group: ""
        resources: ["secrets", "configmaps"]
  - level: RequestResponse
    resources:
      - group: ""
        resources: ["serviceaccounts/token"]
  - level: Request
    resources:
      - group: "rbac.authorization.k8s.io"
        resources: ["roles"]
        resourceNames: ["special"]
  - level: Request
    resources:
      - group: ""
        resources: ["*/status"]
  - level: RequestResponse
    resources:
      - group: "apps"
        resources: ["deployments/*"]
  - level: Request
    namespaces: ["kube-system"]
  - level: Metadata
    omitStages: ["ResponseStarted"]
"#;

    #[test]
    fn the_first_matching_rule_decides_as_upstream() {
        let policy = Policy::parse(POLICY).unwrap();
        let proxy = user("system:kube-proxy", &[]);
        let node = user("system:node:a", &["system:nodes"]);
        let alice = user("alice", &["devs"]);
        assert_eq!(level(&policy, &proxy, "GET", "/api/v1/pods?watch=1"), Level::None);
        assert_eq!(level(&policy, &proxy, "GET", "/api/v1/pods"), Level::Metadata);
        assert_eq!(level(&policy, &node, "GET", "/healthz"), Level::None);
        assert_eq!(level(&policy, &node, "GET", "/healthz/etcd"), Level::None);
        assert_eq!(level(&policy, &node, "GET", "/version"), Level::None);
        assert_eq!(level(&policy, &node, "GET", "/version/x"), Level::Metadata);
        assert_eq!(level(&policy, &alice, "GET", "/healthz"), Level::Metadata);
        assert_eq!(
            level(&policy, &alice, "GET", "/api/v1/namespaces/kube-system/secrets/s"),
            Level::Metadata,
            "an earlier rule wins over the namespace rule"
        );
        assert_eq!(
            level(
                &policy,
                &alice,
                "POST",
                "/api/v1/namespaces/a/serviceaccounts/x/token"
            ),
            Level::RequestResponse
        );
        assert_eq!(
            level(&policy, &alice, "GET", "/api/v1/namespaces/a/serviceaccounts/x"),
            Level::Metadata,
            "serviceaccounts/token does not match the serviceaccounts themselves"
        );
        let roles = "/apis/rbac.authorization.k8s.io/v1/namespaces/a/roles";
        assert_eq!(
            level(&policy, &alice, "GET", &format!("{roles}/special")),
            Level::Request
        );
        assert_eq!(
            level(&policy, &alice, "GET", &format!("{roles}/other")),
            Level::Metadata
        );
        assert_eq!(level(&policy, &alice, "GET", roles), Level::Metadata);
        assert_eq!(
            level(&policy, &alice, "PUT", "/api/v1/namespaces/a/pods/p/status"),
            Level::Request
        );
        assert_eq!(
            level(
                &policy,
                &alice,
                "PUT",
                "/apis/apps/v1/namespaces/a/deployments/d/scale"
            ),
            Level::RequestResponse
        );
        assert_eq!(
            level(&policy, &alice, "GET", "/apis/apps/v1/namespaces/a/deployments/d"),
            Level::RequestResponse,
            "upstream's checker matches `deployments/*` to the resource itself too"
        );
        assert_eq!(
            level(&policy, &alice, "GET", "/api/v1/namespaces/kube-system/pods"),
            Level::Request
        );
        assert_eq!(level(&policy, &alice, "GET", "/api/v1/nodes"), Level::Metadata);
    }

    #[test]
    fn omitted_stages_join_the_policy_and_the_rule() {
        let policy = Policy::parse(POLICY).unwrap();
        let alice = user("alice", &[]);
        let info = info("GET", "/api/v1/nodes");
        let decision = policy.evaluate(&Attributes {
            user: Some(&alice),
            info: &info,
        });
        assert_eq!(
            decision.omit_stages,
            vec![Stage::RequestReceived, Stage::ResponseStarted]
        );
        assert!(!decision.records(Stage::RequestReceived));
        assert!(decision.records(Stage::ResponseComplete));
    }

    #[test]
    fn no_matching_rule_is_level_none_and_an_unauthenticated_request_matches_no_user_rule() {
        let policy = Policy::parse(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Request\n  userGroups: [devs]\n",
        )
        .unwrap();
        let info = info("GET", "/api/v1/nodes");
        assert_eq!(
            policy
                .evaluate(&Attributes {
                    user: None,
                    info: &info
                })
                .level,
            Level::None
        );
        let decision = policy.evaluate(&Attributes {
            user: Some(&user("bob", &["devs"])),
            info: &info,
        });
        assert_eq!(decision.level, Level::Request);
        assert!(
            !Decision {
                level: Level::None,
                omit_stages: Vec::new(),
                omit_managed_fields: false
            }
            .records(Stage::ResponseComplete)
        );
    }

    #[test]
    fn the_default_records_everything_at_metadata() {
        let policy = Policy::metadata_for_everything();
        let anyone = user("x", &[]);
        assert_eq!(level(&policy, &anyone, "GET", "/metrics"), Level::Metadata);
        assert_eq!(
            level(&policy, &anyone, "DELETE", "/api/v1/namespaces/a"),
            Level::Metadata
        );
    }

    #[test]
    fn invalid_policies_are_refused() {
        for bad in [
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules: []\n",
            "apiVersion: audit.k8s.io/v1beta1\nkind: Policy\nrules:\n- level: None\n",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: ['/a*b']\n",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  nonResourceURLs: ['/a']\n  namespaces: [x]\n",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  omitStages: [Later]\n",
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n  resources:\n  - resourceNames: [x]\n",
        ] {
            assert!(Policy::parse(bad).is_err(), "{bad}");
        }
    }
}
