//! `TokenPolicy` (identity.badge.dev/v1): what tokens may be issued, by TokenRequest, for the
//! ServiceAccounts a policy selects in its namespace. Kubernetes has only one global maximum
//! lifetime (`--service-account-max-token-expiration`); a policy narrows audiences, lifetime and
//! binding per ServiceAccount. Every selecting policy applies, so the most restrictive wins.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::identity::identity_kind;

identity_kind! {
    /// Limits on the tokens issued for the ServiceAccounts a policy selects.
    TokenPolicy,
    schema: "dev.badge.identity.v1.TokenPolicy",
    description: "TokenPolicy limits the tokens TokenRequest issues for the ServiceAccounts it selects in its namespace: allowed audiences, maximum lifetime, required bound-object kinds. Every selecting policy applies.",
    metadata: "Standard object metadata.",
    /// Which TokenRequests the policy applies to and what it allows them.
    spec: TokenPolicySpec as "TokenPolicySpec",
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.TokenPolicySpec")]
/// Which TokenRequests a policy applies to and what it allows them.
pub struct TokenPolicySpec {
    /// Which ServiceAccounts of the namespace the policy applies to; empty selects all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "ServiceAccountSelector")]
    pub service_account_selector: Option<ServiceAccountSelector>,
    /// The audiences a token may carry; empty allows any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub allowed_audiences: Option<Vec<String>>,
    /// The longest lifetime issued; longer requests are shortened, with a warning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub max_expiration_seconds: Option<i64>,
    /// The kinds (Pod, Secret, Node) a token must be bound to; empty allows unbound tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub required_bound_object_kinds: Option<Vec<String>>,
}

/// ServiceAccounts by name and by labels; both given, both must match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.ServiceAccountSelector")]
pub struct ServiceAccountSelector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    /// Names of ServiceAccounts in the policy's namespace; any one of them matches.
    pub names: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BTreeMap<String, String>")]
    /// Labels the ServiceAccount must carry, every one of them.
    pub match_labels: Option<BTreeMap<String, String>>,
}

/// The bound-object kinds a token can be bound to.
pub const BOUND_OBJECT_KINDS: &[&str] = &["Pod", "Secret", "Node"];

/// What a TokenRequest asks, after defaulting (audiences filled in).
#[derive(Clone, Copy, Debug)]
pub struct TokenAsked<'a> {
    /// The ServiceAccount's name, in the policy's namespace.
    pub service_account: &'a str,
    /// The ServiceAccount's labels.
    pub service_account_labels: &'a BTreeMap<String, String>,
    /// The audiences asked for.
    pub audiences: &'a [String],
    /// The kind of the object the token is bound to, if any.
    pub bound_object_kind: Option<&'a str>,
    /// The lifetime asked for, in seconds.
    pub expiration_seconds: i64,
}

/// What the policies allow: the lifetime to issue, and why it was shortened.
#[derive(Clone, Debug, PartialEq)]
pub struct Allowed {
    /// The lifetime to issue, in seconds.
    pub expiration_seconds: i64,
    /// Why the lifetime was shortened, as API warnings.
    pub warnings: Vec<String>,
    /// The tightest maximum of the selecting policies: no token outlives it, not even a
    /// kubelet's extended one.
    pub max_expiration_seconds: Option<i64>,
}

/// The first policy (by name) refusing the request, and why.
#[derive(Clone, Debug, PartialEq)]
pub struct Denied {
    /// The refusing policy's name.
    pub policy: String,
    /// Why it refuses.
    pub reason: String,
}

impl std::fmt::Display for Denied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "denied by TokenPolicy \"{}\": {}", self.policy, self.reason)
    }
}

impl TokenPolicy {
    fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or("")
    }

    /// Whether the policy applies to the ServiceAccount.
    pub fn selects(&self, name: &str, labels: &BTreeMap<String, String>) -> bool {
        let Some(selector) = self
            .spec
            .as_ref()
            .and_then(|s| s.service_account_selector.as_ref())
        else {
            return true;
        };
        let names_match = match selector.names.as_deref() {
            None | Some([]) => true,
            Some(names) => names.iter().any(|n| n == name),
        };
        let labels_match = selector
            .match_labels
            .iter()
            .flatten()
            .all(|(key, value)| labels.get(key) == Some(value));
        names_match && labels_match
    }

    fn check(&self, asked: &TokenAsked<'_>) -> Result<(), String> {
        let Some(spec) = &self.spec else {
            return Ok(());
        };
        if let Some(allowed) = spec.allowed_audiences.as_deref().filter(|a| !a.is_empty())
            && let Some(audience) = asked.audiences.iter().find(|a| !allowed.contains(a))
        {
            return Err(format!(
                "audience \"{audience}\" is not allowed (allowed: {})",
                allowed.join(", ")
            ));
        }
        if let Some(kinds) = spec
            .required_bound_object_kinds
            .as_deref()
            .filter(|k| !k.is_empty())
            && !asked
                .bound_object_kind
                .is_some_and(|kind| kinds.iter().any(|k| k == kind))
        {
            return Err(format!(
                "a token must be bound to an object of kind {}",
                kinds.join(" or ")
            ));
        }
        Ok(())
    }
}

/// Applies every policy selecting the ServiceAccount: any refusal refuses (the first by name
/// is named), and the shortest maximum lifetime bounds the token.
pub fn evaluate(policies: &[TokenPolicy], asked: &TokenAsked<'_>) -> Result<Allowed, Denied> {
    let mut selecting: Vec<&TokenPolicy> = policies
        .iter()
        .filter(|p| p.selects(asked.service_account, asked.service_account_labels))
        .collect();
    selecting.sort_by(|a, b| a.name().cmp(b.name()));
    for policy in &selecting {
        policy.check(asked).map_err(|reason| Denied {
            policy: policy.name().to_string(),
            reason,
        })?;
    }
    let tightest = selecting
        .iter()
        .filter_map(|p| {
            let max = p.spec.as_ref()?.max_expiration_seconds?;
            (max > 0).then_some((max, p.name()))
        })
        .min_by_key(|(max, _)| *max);
    let mut allowed = Allowed {
        expiration_seconds: asked.expiration_seconds,
        warnings: Vec::new(),
        max_expiration_seconds: tightest.map(|(max, _)| max),
    };
    if let Some((max, name)) = tightest
        && asked.expiration_seconds > max
    {
        allowed.warnings.push(format!(
            "requested expiration of {} seconds shortened to {max} seconds by TokenPolicy \"{name}\"",
            asked.expiration_seconds
        ));
        allowed.expiration_seconds = max;
    }
    Ok(allowed)
}

/// The shortest lifetime TokenRequest issues: a lower maximum could never be honoured.
pub const MIN_EXPIRATION_SECONDS: i64 = 600;

/// Field errors of a TokenPolicy as written.
pub fn validate(object: &serde_json::Value) -> Vec<crate::FieldError> {
    use crate::FieldError;
    let mut errs = Vec::new();
    if let Some(max) = object
        .pointer("/spec/maxExpirationSeconds")
        .and_then(serde_json::Value::as_i64)
        && max < MIN_EXPIRATION_SECONDS
    {
        errs.push(FieldError::invalid(
            "spec.maxExpirationSeconds",
            max,
            "may not be less than 600 (10 minutes)",
        ));
    }
    let kinds = object
        .pointer("/spec/requiredBoundObjectKinds")
        .and_then(serde_json::Value::as_array);
    for (i, kind) in kinds.into_iter().flatten().enumerate() {
        let text = kind.as_str().unwrap_or("");
        if !BOUND_OBJECT_KINDS.contains(&text) {
            errs.push(FieldError::not_supported(
                format!("spec.requiredBoundObjectKinds[{i}]"),
                kind.clone(),
                BOUND_OBJECT_KINDS,
            ));
        }
    }
    errs
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(name: &str, spec: serde_json::Value) -> TokenPolicy {
        serde_json::from_value(serde_json::json!({
            "apiVersion": crate::identity::API_VERSION,
            "kind": "TokenPolicy",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": spec,
        }))
        .unwrap()
    }

    fn asked<'a>(
        labels: &'a BTreeMap<String, String>,
        audiences: &'a [String],
        bound: Option<&'a str>,
        expiration_seconds: i64,
    ) -> TokenAsked<'a> {
        TokenAsked {
            service_account: "web",
            service_account_labels: labels,
            audiences,
            bound_object_kind: bound,
            expiration_seconds,
        }
    }

    #[test]
    fn validation_refuses_a_maximum_under_ten_minutes_and_unknown_kinds() {
        let good = serde_json::json!({"spec": {"maxExpirationSeconds": 600, "requiredBoundObjectKinds": ["Pod", "Node"]}});
        assert!(validate(&good).is_empty());
        let bad = serde_json::json!({"spec": {"maxExpirationSeconds": 599, "requiredBoundObjectKinds": ["ConfigMap"]}});
        let fields: Vec<String> = validate(&bad).into_iter().map(|e| e.field).collect();
        assert_eq!(
            fields,
            ["spec.maxExpirationSeconds", "spec.requiredBoundObjectKinds[0]"]
        );
    }

    #[test]
    fn selectors_match_by_name_and_labels() {
        let labels = BTreeMap::from([("tier".to_string(), "front".to_string())]);
        let empty = BTreeMap::new();
        let all = policy("all", serde_json::json!({}));
        let by_name = policy(
            "n",
            serde_json::json!({"serviceAccountSelector": {"names": ["web", "api"]}}),
        );
        let by_label = policy(
            "l",
            serde_json::json!({"serviceAccountSelector": {"matchLabels": {"tier": "front"}}}),
        );
        let both = policy(
            "b",
            serde_json::json!({"serviceAccountSelector": {"names": ["api"], "matchLabels": {"tier": "front"}}}),
        );
        assert!(all.selects("web", &empty));
        assert!(by_name.selects("web", &empty));
        assert!(!by_name.selects("db", &labels));
        assert!(by_label.selects("db", &labels));
        assert!(!by_label.selects("web", &empty));
        assert!(!both.selects("web", &labels));
        assert!(both.selects("api", &labels));
    }

    #[test]
    fn an_audience_outside_the_allowed_ones_is_refused_naming_the_policy() {
        let labels = BTreeMap::new();
        let policies = [policy(
            "vault-only",
            serde_json::json!({"allowedAudiences": ["vault"]}),
        )];
        let ok = ["vault".to_string()];
        assert!(evaluate(&policies, &asked(&labels, &ok, None, 3600)).is_ok());
        let bad = ["vault".to_string(), "https://kubernetes.default.svc".to_string()];
        let denied = evaluate(&policies, &asked(&labels, &bad, None, 3600)).unwrap_err();
        assert_eq!(denied.policy, "vault-only");
        assert_eq!(
            denied.to_string(),
            "denied by TokenPolicy \"vault-only\": audience \"https://kubernetes.default.svc\" is not allowed (allowed: vault)"
        );
    }

    #[test]
    fn a_required_bound_object_kind_refuses_unbound_and_other_kinds() {
        let labels = BTreeMap::new();
        let aud = ["api".to_string()];
        let policies = [policy(
            "pods",
            serde_json::json!({"requiredBoundObjectKinds": ["Pod"]}),
        )];
        assert!(evaluate(&policies, &asked(&labels, &aud, Some("Pod"), 3600)).is_ok());
        for bound in [None, Some("Secret")] {
            let denied = evaluate(&policies, &asked(&labels, &aud, bound, 3600)).unwrap_err();
            assert_eq!(denied.reason, "a token must be bound to an object of kind Pod");
        }
    }

    #[test]
    fn the_shortest_maximum_of_all_selecting_policies_shortens_with_a_warning() {
        let labels = BTreeMap::new();
        let aud = ["api".to_string()];
        let policies = [
            policy("day", serde_json::json!({"maxExpirationSeconds": 86400})),
            policy("hour", serde_json::json!({"maxExpirationSeconds": 3600})),
            policy(
                "other",
                serde_json::json!({"serviceAccountSelector": {"names": ["db"]}, "maxExpirationSeconds": 600}),
            ),
        ];
        let allowed = evaluate(&policies, &asked(&labels, &aud, None, 7200)).unwrap();
        assert_eq!(allowed.expiration_seconds, 3600);
        assert_eq!(allowed.max_expiration_seconds, Some(3600));
        assert_eq!(
            allowed.warnings,
            ["requested expiration of 7200 seconds shortened to 3600 seconds by TokenPolicy \"hour\""]
        );
        let within = evaluate(&policies, &asked(&labels, &aud, None, 1800)).unwrap();
        assert_eq!(within.expiration_seconds, 1800);
        assert!(within.warnings.is_empty());
    }

    #[test]
    fn any_selecting_policy_refuses_even_when_another_allows() {
        let labels = BTreeMap::new();
        let aud = ["api".to_string()];
        let policies = [
            policy("b-lenient", serde_json::json!({"allowedAudiences": ["api"]})),
            policy("a-strict", serde_json::json!({"allowedAudiences": ["vault"]})),
        ];
        let denied = evaluate(&policies, &asked(&labels, &aud, None, 3600)).unwrap_err();
        assert_eq!(denied.policy, "a-strict");
        // A policy not selecting the ServiceAccount does not apply.
        let unrelated = [policy(
            "db",
            serde_json::json!({"serviceAccountSelector": {"names": ["db"]}, "allowedAudiences": ["vault"]}),
        )];
        assert!(evaluate(&unrelated, &asked(&labels, &aud, None, 3600)).is_ok());
    }
}
