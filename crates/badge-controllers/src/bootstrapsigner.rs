//! `bootstrapsigner` (`pkg/controller/bootstrap/bootstrapsigner.go`): every bootstrap token
//! allowed to sign puts `jws-kubeconfig-<token-id>`, a detached JWS of the `kubeconfig` in
//! `kube-public/cluster-info`, into that ConfigMap, so a joining node holding the token can
//! trust what it read anonymously. Signatures of tokens that are gone, expired or no longer
//! signing are removed; an unchanged ConfigMap is not written. It runs on the Secrets and
//! the ConfigMap changing, and once more at the next token expiry.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use badge_api::{Status, resources};
use badge_registry::{Registry, WriteOptions};
use badge_token::bootstrap::{
    JWS_KEY_PREFIX, SECRET_NAMESPACE, SECRET_TYPE, detached_signature, id_from_secret_name,
};
use base64::Engine;
use serde_json::Value;

use crate::clusterinfo::{CONFIGMAP, KUBECONFIG_KEY, NAMESPACE};
use crate::runtime::{Action, Controller};
use crate::tokencleaner::{Expiry, expiry};
use crate::{leader, namespaced_key};

const USAGE_SIGNING_KEY: &str = "usage-bootstrap-signing";

fn is_bootstrap_secret(secret: &Value) -> bool {
    secret.get("type").and_then(Value::as_str) == Some(SECRET_TYPE)
}

/// Starts the controller; it reconciles while `leading` says this server leads (always when None).
pub fn spawn(registry: Arc<Registry>, leading: Option<leader::Leading>) {
    let signer = Controller::new("bootstrapsigner", registry.clone(), |event| {
        let relevant = if let Some((ns, _)) = namespaced_key(&event.key, "/registry/secrets/") {
            ns == SECRET_NAMESPACE
                && (is_bootstrap_secret(&event.object.value())
                    || event
                        .prev
                        .as_ref()
                        .is_some_and(|p| is_bootstrap_secret(&p.value())))
        } else {
            namespaced_key(&event.key, "/registry/configmaps/")
                .is_some_and(|(ns, name)| ns == NAMESPACE && name == CONFIGMAP)
        };
        if relevant {
            vec![CONFIGMAP.to_string()]
        } else {
            Vec::new()
        }
    });
    let signer = signer.with_leader_election(leading);
    signer.spawn(move |_| {
        let registry = registry.clone();
        async move { reconcile(&registry).await }
    });
}

/// A decoded `data` value of a Secret.
fn secret_data(secret: &Value, key: &str) -> Option<String> {
    let encoded = secret.get("data")?.get(key)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    String::from_utf8(bytes).ok()
}

/// A Secret's token id and secret when it may sign at `now` (upstream's
/// `validateSecretForSigning`), and when it stops being able to.
pub(crate) fn signing_token(
    secret: &Value,
    now: jiff::Timestamp,
) -> Option<(String, String, Option<Duration>)> {
    if !is_bootstrap_secret(secret) {
        return None;
    }
    let name = secret.pointer("/metadata/name").and_then(Value::as_str)?;
    let name_id = id_from_secret_name(name)?;
    let id = secret_data(secret, "token-id").filter(|id| id == name_id)?;
    let token_secret = secret_data(secret, "token-secret").filter(|s| !s.is_empty())?;
    // Present but undecodable counts as an unparseable expiration: expired.
    let expiration = secret
        .pointer("/data/expiration")
        .map(|_| secret_data(secret, "expiration").unwrap_or_else(|| "-".into()));
    let left = match expiry(expiration.as_deref(), now) {
        Expiry::Expired => return None,
        Expiry::Never => None,
        Expiry::In(left) => Some(left),
    };
    if secret_data(secret, USAGE_SIGNING_KEY).as_deref() != Some("true") {
        return None;
    }
    Some((id, token_secret, left))
}

/// The `jws-kubeconfig-*` entries `content` should have, and how soon one of them expires.
fn wanted_signatures(
    registry: &Registry,
    content: &str,
    now: jiff::Timestamp,
) -> (BTreeMap<String, String>, Option<Duration>) {
    let (secrets, _) = registry
        .cache()
        .list(&format!("/registry/secrets/{SECRET_NAMESPACE}/"), None);
    let mut wanted = BTreeMap::new();
    let mut next_expiry: Option<Duration> = None;
    for (_, secret) in secrets {
        let Some((id, token_secret, left)) = signing_token(&secret, now) else {
            continue;
        };
        if let Some(left) = left {
            next_expiry = Some(next_expiry.map_or(left, |n| n.min(left)));
        }
        let signature = detached_signature(content, &id, &token_secret);
        wanted.insert(format!("{JWS_KEY_PREFIX}{id}"), signature);
    }
    (wanted, next_expiry)
}

fn current_signatures(configmap: &Value) -> BTreeMap<String, String> {
    configmap
        .get("data")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(k, _)| k.starts_with(JWS_KEY_PREFIX))
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
        .collect()
}

async fn reconcile(registry: &Registry) -> Result<Action, Status> {
    let configmaps = resources::CONFIGMAPS;
    let Some(configmap) = registry.get_cached(configmaps, NAMESPACE, CONFIGMAP) else {
        return Ok(Action::Done);
    };
    let Some(content) = configmap
        .pointer(&format!("/data/{KUBECONFIG_KEY}"))
        .and_then(Value::as_str)
    else {
        return Ok(Action::Done);
    };
    let (wanted, next_expiry) = wanted_signatures(registry, content, badge_api::clock::now());
    // A little past the instant, so the next look sees the token expired.
    let next = match next_expiry {
        Some(left) => Action::RequeueAfter(left + Duration::from_millis(10)),
        None => Action::Done,
    };
    if current_signatures(&configmap) == wanted {
        return Ok(next);
    }
    let result = registry
        .update(
            configmaps,
            NAMESPACE,
            CONFIGMAP,
            "",
            &WriteOptions::default(),
            |current| {
                let mut updated = current.clone();
                // Signed content changed meanwhile: that change's own event re-signs it.
                if current
                    .pointer(&format!("/data/{KUBECONFIG_KEY}"))
                    .and_then(Value::as_str)
                    != Some(content)
                {
                    return Ok(updated);
                }
                if let Some(data) = updated.get_mut("data").and_then(Value::as_object_mut) {
                    data.retain(|k, _| !k.starts_with(JWS_KEY_PREFIX));
                    for (k, v) in &wanted {
                        data.insert(k.clone(), Value::String(v.clone()));
                    }
                }
                Ok(updated)
            },
        )
        .await;
    match result {
        Ok(_) => Ok(next),
        Err(s) if s.is_not_found() => Ok(Action::Done),
        Err(s) => Err(s),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn secret(name: &str, data: &[(&str, &str)]) -> Value {
        let data: serde_json::Map<String, Value> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    Value::String(base64::engine::general_purpose::STANDARD.encode(v)),
                )
            })
            .collect();
        json!({"metadata": {"name": name, "namespace": "kube-system"},
               "type": "bootstrap.kubernetes.io/token", "data": data})
    }

    #[test]
    fn which_secrets_sign_as_upstream_validates_them() {
        let now: jiff::Timestamp = "2023-11-14T22:13:20Z".parse().unwrap();
        let good = [
            ("token-id", "abcdef"),
            ("token-secret", "0123456789abcdef"),
            ("usage-bootstrap-signing", "true"),
        ];
        let signs = |s: &Value| signing_token(s, now);
        assert_eq!(
            signs(&secret("bootstrap-token-abcdef", &good)),
            Some(("abcdef".into(), "0123456789abcdef".into(), None))
        );
        let with = |extra: (&'static str, &'static str)| {
            let mut data: Vec<(&str, &str)> = good.iter().filter(|(k, _)| *k != extra.0).copied().collect();
            data.push(extra);
            secret("bootstrap-token-abcdef", &data)
        };
        assert_eq!(
            signs(&with(("expiration", "2023-11-14T22:23:20Z"))).unwrap().2,
            Some(Duration::from_secs(600))
        );
        assert_eq!(signs(&with(("expiration", "2023-11-14T22:13:20Z"))), None);
        assert_eq!(signs(&with(("expiration", "garbage"))), None);
        assert_eq!(signs(&with(("usage-bootstrap-signing", "yes"))), None);
        assert_eq!(signs(&with(("token-id", "abcdeg"))), None);
        assert_eq!(signs(&with(("token-secret", ""))), None);
        assert_eq!(signs(&secret("bootstrap-token-abcdef", &good[..2])), None);
        assert_eq!(signs(&secret("bootstrap-abcdef", &good)), None);
        let mut opaque = secret("bootstrap-token-abcdef", &good);
        opaque["type"] = json!("Opaque");
        assert_eq!(signs(&opaque), None);
    }
}
