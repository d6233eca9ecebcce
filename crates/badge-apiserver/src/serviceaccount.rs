//! ServiceAccount tokens in the server: TokenRequest
//! (`pkg/registry/core/serviceaccount/storage/token.go`), the object lookups the
//! authenticator needs (backed by the watch cache), and OIDC discovery
//! (`pkg/routes/openidmetadata.go`). The signing keys are `badge-keys`'.

use std::sync::Arc;

use badge_api::{FieldError, Status, meta, resources};
use badge_auth::serviceaccount::{ObjectInfo, SecretInfo, ServiceAccountTokenGetter};
use badge_keys::ServiceAccountKeys;
use badge_registry::Registry;
use badge_token::{BoundClaims, ObjectRef};
use base64::Engine;
use serde_json::Value;

use crate::tokenrequest::{
    self, ReplyMetadata, ReplySpec, ReplyStatus, TokenRequestInput, TokenRequestReply,
};

/// The smallest `expirationSeconds` (`MinTokenAgeSec`).
pub const MIN_TOKEN_SECONDS: i64 = 600;
/// `WarnOnlyBoundTokenExpirationSeconds`: what ServiceAccount admission asks for.
pub const KUBELET_TOKEN_SECONDS: i64 = 3607;
/// `ExpirationExtensionSeconds`: how long the kubelet's tokens really live.
pub const EXTENDED_EXPIRATION_SECONDS: i64 = 365 * 24 * 3600;
/// The most bytes a TokenRequest's audiences may take together. Upstream sets no bound, but
/// badge records every token issued as one stored IssuedToken: audiences too long to store
/// would make a live token that no record shows and no `spec.revoked` reaches.
pub const MAX_AUDIENCE_BYTES: usize = 64 * 1024;

/// Token settings, named after kube-apiserver's flags.
#[derive(Clone, Debug)]
pub struct TokenConfig {
    /// `--service-account-issuer` (the first signs; all verify).
    pub issuers: Vec<String>,
    /// `--api-audiences` (default: the issuers).
    pub api_audiences: Vec<String>,
    /// `--service-account-max-token-expiration` in seconds (0: none).
    pub max_expiration: i64,
    /// The shortest `expirationSeconds` accepted: upstream's 600 ([`MIN_TOKEN_SECONDS`]);
    /// only tests lower it.
    pub min_expiration: i64,
    /// `--service-account-extend-token-expiration`.
    pub extend_expiration: bool,
    /// `--service-account-jwks-uri`.
    pub jwks_uri: String,
}

/// What the authenticator checks of an object, read without decoding it.
fn cached_object_info(object: &badge_registry::CachedObject) -> ObjectInfo {
    ObjectInfo {
        uid: object.uid().to_string(),
        deletion_timestamp: object
            .deletion_timestamp()
            .and_then(meta::parse_time)
            .map(|t| t.as_second()),
        disabled: false,
    }
}

fn object_info(object: &Value) -> ObjectInfo {
    ObjectInfo {
        uid: meta::uid(object).to_string(),
        deletion_timestamp: meta::deletion_timestamp(object)
            .and_then(meta::parse_time)
            .map(|t| t.as_second()),
        disabled: false,
    }
}

/// The authenticator's lookups, answered from the watch cache.
pub struct CacheTokenGetter(pub Arc<Registry>);

impl ServiceAccountTokenGetter for CacheTokenGetter {
    fn service_account(&self, namespace: &str, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(resources::SERVICEACCOUNTS, namespace, name)
            .map(|o| {
                let mut info = cached_object_info(&o);
                info.disabled = o.disabled();
                info
            })
    }

    fn pod(&self, namespace: &str, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(resources::PODS, namespace, name)
            .map(|o| cached_object_info(&o))
    }

    fn secret(&self, namespace: &str, name: &str) -> Option<SecretInfo> {
        self.0
            .get_cached(resources::SECRETS, namespace, name)
            .map(|o| SecretInfo {
                object: object_info(&o),
                token: o
                    .pointer("/data/token")
                    .and_then(Value::as_str)
                    .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
                    .map(badge_token::Secret::new),
                invalidated: o
                    .pointer("/metadata/labels/kubernetes.io~1legacy-token-invalid-since")
                    .is_some(),
            })
    }

    fn node(&self, name: &str) -> Option<ObjectInfo> {
        self.0
            .get_cached_object(resources::NODES, "", name)
            .map(|o| cached_object_info(&o))
    }
}

impl badge_auth::bootstrap::BootstrapTokenGetter for CacheTokenGetter {
    fn bootstrap_secret(&self, name: &str) -> Option<badge_auth::bootstrap::BootstrapSecretInfo> {
        let secret = self
            .0
            .get_cached(resources::SECRETS, badge_token::bootstrap::SECRET_NAMESPACE, name)?;
        let engine = &base64::engine::general_purpose::STANDARD;
        Some(badge_auth::bootstrap::BootstrapSecretInfo {
            deleting: meta::deletion_timestamp(&secret).is_some(),
            secret_type: secret
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("Opaque")
                .to_string(),
            data: secret.get("data").and_then(Value::as_object).map(|data| {
                data.iter()
                    .filter_map(|(k, v)| Some((k.clone(), engine.decode(v.as_str()?).ok()?)))
                    .collect()
            }),
        })
    }
}

/// What the TokenRequest handler needs.
pub struct TokenIssuer {
    /// The signing keys.
    pub keys: Arc<ServiceAccountKeys>,
    /// Issuer, audiences and lifetimes.
    pub config: TokenConfig,
}

fn token_request_invalid(errors: &[FieldError]) -> Status {
    Status::invalid("authentication.k8s.io", "TokenRequest", "", errors)
}

impl TokenIssuer {
    /// `POST .../serviceaccounts/NAME/token`, in upstream's order of checks.
    pub async fn create(
        &self,
        registry: &Registry,
        namespace: &str,
        sa_name: &str,
        request: TokenRequestInput,
        requester: &str,
        inventory: bool,
    ) -> Result<(TokenRequestReply, Vec<String>, Issued), Status> {
        if namespace.is_empty() {
            return Err(Status::bad_request("namespace is required"));
        }
        let mut errors = Vec::new();
        let given_name = request.name;
        if !given_name.is_empty() && given_name != sa_name {
            errors.push(FieldError::invalid(
                "metadata.name",
                given_name,
                "must match the service account name if specified",
            ));
        }
        let given_ns = request.namespace;
        if !given_ns.is_empty() && given_ns != namespace {
            errors.push(FieldError::invalid(
                "metadata.namespace",
                given_ns,
                "must match the service account namespace if specified",
            ));
        }
        if !errors.is_empty() {
            return Err(token_request_invalid(&errors));
        }
        let sa = registry
            .get_object(
                resources::SERVICEACCOUNTS,
                namespace,
                sa_name,
                badge_registry::ReadFrom::Recent,
            )
            .await?;
        let sa_uid = sa.uid().to_string();
        let given_uid = request.uid;
        if !given_uid.is_empty() && given_uid != sa_uid {
            return Err(Status::conflict(
                badge_api::GroupResource {
                    group: "authentication.k8s.io",
                    resource: "TokenRequest",
                },
                sa_name,
                &format!(
                    "the UID in the token request ({given_uid}) does not match the UID of the service account ({sa_uid})"
                ),
            ));
        }
        let mut audiences = request.audiences;
        if audiences.is_empty() {
            audiences = self.config.api_audiences.clone();
        }
        if audiences.iter().map(String::len).sum::<usize>() > MAX_AUDIENCE_BYTES {
            return Err(token_request_invalid(&[FieldError::too_long(
                "spec.audiences",
                MAX_AUDIENCE_BYTES,
            )]));
        }
        let now_ts = badge_api::clock::now();
        let now = now_ts.as_second();
        let mut expiration = request.expiration_seconds.unwrap_or(3600);
        if expiration < self.config.min_expiration {
            return Err(token_request_invalid(&[FieldError::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration less than 10 minutes",
            )]));
        }
        if expiration > 1 << 32 {
            return Err(token_request_invalid(&[FieldError::invalid(
                "spec.expirationSeconds",
                expiration,
                "may not specify a duration larger than 2^32 seconds",
            )]));
        }
        let mut claims = BoundClaims::new(
            self.config.issuers.first().cloned().unwrap_or_default(),
            audiences.clone(),
            namespace,
            ObjectRef::new(sa_name, sa_uid.clone()),
            now,
            expiration,
        );
        let bound_ref = request.bound_object_ref;
        let mut bound_to_pod = false;
        if let Some(r) = &bound_ref {
            let (kind, api_version, name, uid) = (r.kind(), r.api_version(), r.name(), r.uid());
            let group = api_version
                .rsplit_once('/')
                .map(|(g, _)| g.to_string())
                .unwrap_or_default();
            let live_of = |object: &Value, kind: &str| -> Result<String, Status> {
                let live_uid = meta::uid(object).to_string();
                if !uid.is_empty() && uid != live_uid {
                    return Err(Status::conflict(
                        badge_api::GroupResource {
                            group: "",
                            resource: kind,
                        },
                        name,
                        &format!(
                            "the UID in the bound object reference ({uid}) does not match the UID in record. The object might have been deleted and then recreated"
                        ),
                    ));
                }
                Ok(live_uid)
            };
            match (group.as_str(), kind) {
                ("", "Pod") => {
                    let pod = registry
                        .get(resources::PODS, namespace, name, badge_registry::ReadFrom::Recent)
                        .await?;
                    let pod_sa = pod
                        .pointer("/spec/serviceAccountName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if pod_sa != sa_name {
                        return Err(Status::bad_request(format!(
                            "cannot bind token for serviceaccount \"{sa_name}\" to pod running with different serviceaccount name."
                        )));
                    }
                    let pod_uid = live_of(&pod, "Pod")?;
                    claims.pod = Some(ObjectRef::new(name.to_string(), pod_uid));
                    let node_name = pod
                        .pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    if !node_name.is_empty() {
                        let node_uid = registry
                            .get_cached(resources::NODES, "", node_name)
                            .map(|n| meta::uid(&n).to_string());
                        claims.node = Some(badge_token::claims::NodeRef {
                            name: node_name.to_string(),
                            uid: node_uid,
                        });
                    }
                    bound_to_pod = true;
                }
                ("", "Secret") => {
                    let secret = registry
                        .get(
                            resources::SECRETS,
                            namespace,
                            name,
                            badge_registry::ReadFrom::Recent,
                        )
                        .await?;
                    claims.secret = Some(ObjectRef::new(name.to_string(), live_of(&secret, "Secret")?));
                }
                ("", "Node") => {
                    let node = registry
                        .get(resources::NODES, "", name, badge_registry::ReadFrom::Recent)
                        .await?;
                    let node_uid = live_of(&node, "Node")?;
                    claims.node = Some(badge_token::claims::NodeRef {
                        name: name.to_string(),
                        uid: Some(node_uid),
                    });
                }
                _ => {
                    let version = api_version.rsplit('/').next().unwrap_or("");
                    return Err(Status::bad_request(format!(
                        "cannot bind token to object of type {group}/{version}, Kind={kind}"
                    )));
                }
            }
        }
        let allowed = crate::token_policy::admit(
            registry,
            crate::token_policy::Request {
                namespace,
                service_account_name: sa_name,
                service_account: &sa,
                audiences: &audiences,
                bound_object_kind: bound_ref.as_ref().map(|r| r.kind()),
                expiration_seconds: expiration,
            },
        )
        .await?;
        expiration = allowed.expiration_seconds;
        let mut warnings = allowed.warnings.clone();
        if self.config.max_expiration > 0 && expiration > self.config.max_expiration {
            warnings.push(format!(
                "requested expiration of {expiration} seconds shortened to {} seconds",
                self.config.max_expiration
            ));
            expiration = self.config.max_expiration;
        }
        claims.expires_at = now + expiration;
        let all_api_audiences = audiences.iter().all(|a| self.config.api_audiences.contains(a));
        let policy_allows_extension = allowed
            .max_expiration_seconds
            .is_none_or(|max| max >= EXTENDED_EXPIRATION_SECONDS);
        if self.config.extend_expiration
            && policy_allows_extension
            && bound_to_pod
            && expiration == KUBELET_TOKEN_SECONDS
            && all_api_audiences
        {
            claims.expires_at = now + EXTENDED_EXPIRATION_SECONDS;
            claims.warn_after = Some(now + KUBELET_TOKEN_SECONDS);
        }
        let payload = claims.to_payload().map_err(|e| Status::internal(e.to_string()))?;
        let (token, key_id) = self.keys.sign_payload_with_kid(&payload)?;
        let jti = claims.jti.clone().unwrap_or_default();
        // Debug only, as upstream logs nothing per token: the audit event's
        // issued-credential-id annotation and the inventory record name it. At info level the
        // log writer thread was woken for every TokenRequest, a sixth of the server's CPU.
        tracing::debug!(
            namespace,
            serviceaccount = sa_name,
            jti = %jti,
            "issued credential JTI={jti}"
        );
        let record = inventory.then(|| {
            crate::usage::IssuedRecord::new(
                namespace,
                sa_name,
                &sa_uid,
                &jti,
                &key_id,
                &audiences,
                bound_ref.as_ref().map(|r| (r.kind(), r.name(), r.uid())),
                requester,
                now,
                claims.expires_at,
            )
        });
        let expiration_timestamp = jiff::Timestamp::from_second(now + expiration)
            .map(meta::format_time)
            .unwrap_or_default();
        let reply = TokenRequestReply {
            api_version: tokenrequest::API_VERSION,
            kind: tokenrequest::KIND,
            metadata: ReplyMetadata {
                creation_timestamp: meta::format_time(now_ts),
                name: sa_name.to_string(),
                namespace: namespace.to_string(),
                uid: sa_uid,
            },
            spec: ReplySpec {
                audiences,
                bound_object_ref: bound_ref,
                expiration_seconds: expiration,
            },
            status: ReplyStatus {
                expiration_timestamp,
                token,
            },
        };
        Ok((reply, warnings, Issued { jti, record }))
    }
}

/// What a TokenRequest leaves behind beside its reply.
pub struct Issued {
    /// The token's `jti`.
    pub jti: String,
    /// Its IssuedToken record, when the inventory is kept.
    pub record: Option<crate::usage::IssuedRecord>,
}

/// Whether OIDC discovery is served for this issuer (only https issuers, as upstream).
pub fn serves_discovery(issuer: &str) -> bool {
    badge_token::oidc::serves_discovery(issuer)
}
