//! badge's own kinds in `identity.badge.dev/v1`: the inventory of issued tokens
//! (`IssuedToken`) and when each ServiceAccount was last used (`ServiceAccountUsage`).
//! Kubernetes has no such objects; their shapes follow its conventions (spec written once by
//! the server, status kept current by it, times as `metav1.Time`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// Optional fields carry `#[schemars(with = ...)]`: Kubernetes' schemas mark them optional by
// leaving them out of `required`, never as nullable, and kubectl explain follows plain refs.

/// One kind of `identity.badge.dev/v1`: the type and object metadata every object carries,
/// then its optional parts (`spec`, `status`), each named with its type for the schema (which
/// takes the type as a string).
macro_rules! identity_kind {
    (
        $(#[$attr:meta])*
        $name:ident,
        schema: $schema:literal,
        description: $description:literal,
        metadata: $metadata_doc:literal,
        $($(#[doc = $part_doc:literal])* $part:ident: $part_type:ty as $part_schema:literal),+ $(,)?
    ) => {
        $(#[$attr])*
        #[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
        #[schemars(rename = $schema)]
        #[schemars(description = $description)]
        pub struct $name {
            #[serde(rename = "apiVersion", default, skip_serializing_if = "Option::is_none")]
            #[schemars(with = "String")]
            /// APIVersion defines the versioned schema of this representation of an object.
            pub api_version: Option<String>,
            #[serde(default, skip_serializing_if = "Option::is_none")]
            #[schemars(with = "String")]
            /// Kind is the REST resource this object represents.
            pub kind: Option<String>,
            #[serde(default)]
            #[doc = $metadata_doc]
            pub metadata: ObjectMeta,
            $(
                $(#[doc = $part_doc])*
                #[serde(default, skip_serializing_if = "Option::is_none")]
                #[schemars(with = $part_schema)]
                pub $part: Option<$part_type>,
            )+
        }
    };
}
pub(crate) use identity_kind;

/// The API group.
pub const GROUP: &str = "identity.badge.dev";
/// `identity.badge.dev/v1`.
pub const API_VERSION: &str = "identity.badge.dev/v1";
/// The label naming the ServiceAccount of an IssuedToken, so `-l` selects by it.
pub const SERVICE_ACCOUNT_LABEL: &str = "identity.badge.dev/service-account";

/// The [`SERVICE_ACCOUNT_LABEL`] value for the ServiceAccount `name`: None when the name,
/// a DNS subdomain of up to 253 characters, is longer than a label value may be (63). Such
/// a record goes without the label, as upstream's Job controller sets `job-name` only on
/// Jobs whose name fits; `spec.serviceAccountName` names the account either way.
pub fn service_account_label(name: &str) -> Option<&str> {
    (name.len() <= 63).then_some(name)
}
/// The label telling legacy Secret tokens (`legacy`) from TokenRequest tokens (`bound`).
pub const TOKEN_KIND_LABEL: &str = "identity.badge.dev/token-kind";
/// On a ServiceAccount: `true` when it is disabled (no token is issued for it).
pub const DISABLED_LABEL: &str = "identity.badge.dev/disabled";
/// On a ServiceAccount: the day (UTC, `2006-01-02`) it was found idle.
pub const IDLE_SINCE_LABEL: &str = "identity.badge.dev/idle-since";
/// Upstream's label on legacy token Secrets: the day (UTC, `2006-01-02`) of the last use.
pub const LEGACY_TOKEN_LAST_USED_LABEL: &str = "kubernetes.io/legacy-token-last-used";

identity_kind! {
    /// One issued token: who it is for, what it is bound to, and how it has been used.
    IssuedToken,
    schema: "dev.badge.identity.v1.IssuedToken",
    description: "IssuedToken records one ServiceAccount token the server issued (named by its jti) or a legacy Secret token (named after its Secret), kept until the token expires.",
    metadata: "Standard object metadata; named after the token's jti, or a legacy token's Secret.",
    /// What the token was issued for.
    spec: IssuedTokenSpec as "IssuedTokenSpec",
    /// How the token has been used.
    status: IssuedTokenStatus as "IssuedTokenStatus",
}

/// What the token says, written when it was issued. Only `revoked` may change.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.IssuedTokenSpec")]
pub struct IssuedTokenSpec {
    /// The ServiceAccount the token authenticates as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub service_account_name: Option<String>,
    /// The ServiceAccount's uid when the token was issued.
    #[serde(
        rename = "serviceAccountUID",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(with = "String")]
    pub service_account_uid: Option<String>,
    /// The audiences the token is valid for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Vec<String>")]
    pub audiences: Option<Vec<String>>,
    /// The object the token is bound to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "BoundObjectReference")]
    pub bound_object_ref: Option<BoundObjectReference>,
    /// The id of the key that signed the token.
    #[serde(rename = "keyID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub key_id: Option<String>,
    /// Who asked for the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Requester")]
    pub requester: Option<Requester>,
    /// When the token was issued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub issued_at: Option<Time>,
    /// When the token expires; absent for legacy tokens, which never do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub expires_at: Option<Time>,
    /// Whether the token has been revoked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "bool")]
    pub revoked: Option<bool>,
}

/// The object a token is bound to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "dev.badge.identity.v1.BoundObjectReference")]
pub struct BoundObjectReference {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// The kind of the bound object: Pod, Secret or Node.
    pub kind: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// The name of the bound object.
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// The UID of the bound object.
    pub uid: Option<String>,
}

/// The user who requested a token.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "dev.badge.identity.v1.Requester")]
pub struct Requester {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// The requesting user's name.
    pub username: Option<String>,
}

/// How a token has been used, as the servers last flushed it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.IssuedTokenStatus")]
pub struct IssuedTokenStatus {
    /// The latest authentication with the token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "LastUse")]
    pub last_used: Option<LastUse>,
    /// How many times the token authenticated a request or passed a TokenReview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub use_count: Option<i64>,
    /// Set when the token was used in a way its holder alone would not use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Suspicion")]
    pub suspicious: Option<Suspicion>,
}

/// Why a token looks stolen.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[schemars(rename = "dev.badge.identity.v1.Suspicion")]
pub struct Suspicion {
    /// `MultipleSourceAddresses`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// What was seen, for people.
    pub message: Option<String>,
    /// When the use was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub time: Option<Time>,
}

/// One use of a credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.LastUse")]
pub struct LastUse {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    /// When the credential was used.
    pub time: Option<Time>,
    /// The credential used (`JTI=...`, or `Secret=NAME` for a legacy token); only on
    /// ServiceAccountUsage.
    #[serde(rename = "credentialID", default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub credential_id: Option<String>,
    /// The client's address; empty for uses through TokenReview.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub source_address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    /// The client's User-Agent.
    pub user_agent: Option<String>,
}

identity_kind! {
    /// When a ServiceAccount last authenticated and last had a token issued.
    ServiceAccountUsage,
    schema: "dev.badge.identity.v1.ServiceAccountUsage",
    description: "ServiceAccountUsage records when a ServiceAccount last authenticated and last had a token issued, and how many of its tokens are live. Named after the ServiceAccount.",
    metadata: "Standard object metadata; named after the ServiceAccount.",
    /// The ServiceAccount's latest uses and live tokens.
    status: ServiceAccountUsageStatus as "ServiceAccountUsageStatus",
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "dev.badge.identity.v1.ServiceAccountUsageStatus")]
/// The observed use of a ServiceAccount.
pub struct ServiceAccountUsageStatus {
    /// The latest authentication as the ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "LastUse")]
    pub last_authenticated: Option<LastUse>,
    /// When a token was last issued for the ServiceAccount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Time")]
    pub last_token_issued: Option<Time>,
    /// How many IssuedTokens of the ServiceAccount exist (unexpired, or legacy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i64")]
    pub live_tokens: Option<i64>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_follow_kubernetes_conventions() {
        let value = serde_json::json!({
            "apiVersion": API_VERSION,
            "kind": "IssuedToken",
            "metadata": {"name": "j", "namespace": "demo"},
            "spec": {
                "serviceAccountName": "app", "serviceAccountUID": "u", "audiences": ["a"],
                "boundObjectRef": {"kind": "Pod", "name": "p", "uid": "pu"}, "keyID": "k",
                "requester": {"username": "admin"}, "issuedAt": "2026-01-01T00:00:00Z",
                "expiresAt": "2026-01-01T01:00:00Z", "revoked": false
            },
            "status": {"lastUsed": {"time": "2026-01-01T00:10:00Z", "sourceAddress": "127.0.0.1",
                "userAgent": "kubectl"}, "useCount": 3}
        });
        let typed: IssuedToken = serde_json::from_value(value.clone()).unwrap();
        assert_eq!(serde_json::to_value(&typed).unwrap(), value);
    }
}
