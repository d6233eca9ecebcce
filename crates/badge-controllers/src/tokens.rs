//! The tokens controller (`pkg/controller/serviceaccount/tokens_controller.go`): fills
//! ServiceAccount token Secrets with a legacy token, the CA and the namespace, deletes token
//! Secrets whose ServiceAccount is gone, and — with
//! `--legacy-service-account-token-auto-generation`, as before Kubernetes 1.24 — creates a
//! token Secret for every ServiceAccount and lists it in `.secrets`. Legacy tokens never
//! expire, so a Secret whose token was signed by a key that no longer verifies (retired or
//! revoked) gets a new token from the current key; every token Secret is looked at again
//! whenever the keys change.

use std::sync::Arc;

use badge_api::{Resource, Status, meta, resources};
use badge_registry::{DeleteOptions, Filter, ReadFrom, Registry, WriteOptions};
use badge_token::{LegacyClaims, ObjectRef};
use base64::Engine;
use rand::Rng;
use serde_json::{Value, json};

use crate::runtime::{Action, Controller};

/// The Secret type of a legacy ServiceAccount token.
pub const SERVICE_ACCOUNT_TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Annotation naming the ServiceAccount a token Secret belongs to.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// Annotation holding that ServiceAccount's UID.
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";

/// Signs legacy tokens; the server's key holder implements it.
pub trait LegacyTokenSigner: Send + Sync {
    /// A signed legacy token for `claims`, or why it could not be signed.
    fn sign_legacy(&self, claims: &LegacyClaims) -> Result<badge_token::Token, String>;

    /// Whether tokens signed by the key `kid` still verify: false once it was retired or
    /// revoked.
    fn verifies_kid(&self, kid: &str) -> bool {
        let _ = kid;
        true
    }

    /// The kids that verify, notified whenever that set changes.
    fn key_changes(&self) -> Option<tokio::sync::watch::Receiver<Vec<String>>> {
        None
    }
}

/// The `kid` in the header of a JWT, read without verifying it.
fn token_kid(token: &str) -> Option<String> {
    let header = token.split('.').next()?;
    let header = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .ok()?;
    let header: Value = serde_json::from_slice(&header).ok()?;
    header.get("kid")?.as_str().map(str::to_string)
}

/// The kid of the token in a token Secret's data when that key no longer verifies.
fn stale_kid(secret: &Value, signer: &dyn LegacyTokenSigner) -> Option<String> {
    let encoded = secret.get("data")?.get("token")?.as_str()?;
    let token = base64::engine::general_purpose::STANDARD.decode(encoded).ok()?;
    let kid = token_kid(std::str::from_utf8(&token).ok()?)?;
    (!signer.verifies_kid(&kid)).then_some(kid)
}

fn is_token_secret(secret: &Value) -> bool {
    secret.get("type").and_then(Value::as_str) == Some(SERVICE_ACCOUNT_TOKEN_TYPE)
}

/// Starts the controller.
pub fn spawn(
    registry: Arc<Registry>,
    signer: Arc<dyn LegacyTokenSigner>,
    ca_pem: Arc<String>,
    auto_generate: bool,
    leading: Option<crate::leader::Leading>,
) {
    let controller = Controller::new("tokens", registry.clone(), |event| {
        if let Some(rest) = event.key.strip_prefix("/registry/serviceaccounts/") {
            return vec![rest.to_string()];
        }
        if let Some(rest) = event.key.strip_prefix("/registry/secrets/") {
            let secret = event.object.value();
            if !is_token_secret(&secret) {
                return Vec::new();
            }
            let ns = rest.split('/').next().unwrap_or("");
            if let Some(sa) = meta::annotation(&secret, SA_NAME_ANNOTATION) {
                return vec![format!("{ns}/{sa}")];
            }
        }
        Vec::new()
    });
    let controller = controller.with_leader_election(leading);
    if let Some(mut changes) = signer.key_changes() {
        let controller = controller.clone();
        let registry = registry.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let Ok(page) = registry
                    .list(resources::SECRETS, "", &Filter::default(), ReadFrom::Any, 0, None)
                    .await
                else {
                    continue;
                };
                for secret in page.items.iter().filter(|s| is_token_secret(s)) {
                    if let Some(sa) = meta::annotation(secret, SA_NAME_ANNOTATION) {
                        controller.enqueue(format!("{}/{sa}", meta::namespace(secret)));
                    }
                }
            }
        });
    }
    controller.spawn(move |key| {
        let registry = registry.clone();
        let signer = signer.clone();
        let ca = ca_pem.clone();
        async move {
            let Some((ns, name)) = key.split_once('/') else {
                return Ok(Action::Done);
            };
            reconcile(&registry, signer.as_ref(), &ca, auto_generate, ns, name).await
        }
    });
}

async fn reconcile(
    registry: &Registry,
    signer: &dyn LegacyTokenSigner,
    ca_pem: &str,
    auto_generate: bool,
    ns: &str,
    sa_name: &str,
) -> Result<Action, Status> {
    let secrets = resources::SECRETS;
    // Up to date with the store, then only this ServiceAccount's Secrets, from the index.
    registry.sync().await?;
    let token_secrets: Vec<Arc<Value>> = registry
        .cache()
        .secrets_of_service_account(ns, sa_name)
        .into_iter()
        .map(|(_, cached)| cached.value())
        .filter(|s| is_token_secret(s))
        .collect();
    let sa = registry
        .get_cached(resources::SERVICEACCOUNTS, ns, sa_name)
        .filter(|sa| meta::deletion_timestamp(sa).is_none());
    let Some(sa) = sa else {
        // The ServiceAccount is gone: so are its token Secrets.
        for secret in token_secrets {
            delete_quietly(registry, secrets, ns, meta::name(&secret)).await?;
        }
        return Ok(Action::Done);
    };
    let sa_uid = meta::uid(&sa).to_string();
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let mut live_names = Vec::new();
    for secret in &token_secrets {
        let name = meta::name(secret).to_string();
        let annotated_uid = meta::annotation(secret, SA_UID_ANNOTATION).unwrap_or("");
        if !annotated_uid.is_empty() && annotated_uid != sa_uid {
            // Made for an earlier ServiceAccount of the same name.
            delete_quietly(registry, secrets, ns, &name).await?;
            continue;
        }
        live_names.push(name.clone());
        let data = secret.get("data");
        let has = |k: &str| {
            data.and_then(|d| d.get(k))
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        };
        let stale = stale_kid(secret, signer);
        if has("token") && has("ca.crt") && has("namespace") && annotated_uid == sa_uid && stale.is_none() {
            continue;
        }
        // Replaced only if still the token seen here, not one another writer put in since.
        let stale_token = stale
            .as_ref()
            .and_then(|_| secret.get("data")?.get("token")?.as_str().map(str::to_string));
        let claims = LegacyClaims {
            namespace: ns.to_string(),
            service_account: ObjectRef::new(sa_name, sa_uid.clone()),
            secret_name: name.clone(),
        };
        let token = signer.sign_legacy(&claims).map_err(Status::internal)?;
        let result = registry
            .update(secrets, ns, &name, "", &WriteOptions::default(), |current| {
                let mut updated = current.clone();
                let data = updated
                    .as_object_mut()
                    .map(|o| o.entry("data").or_insert_with(|| json!({})));
                if let Some(Value::Object(d)) = data {
                    let current = d.get("token").and_then(Value::as_str);
                    if current.is_none_or(|t| t.is_empty())
                        || (stale_token.is_some() && current == stale_token.as_deref())
                    {
                        d.insert("token".into(), json!(b64(token.expose())));
                    }
                    d.insert("ca.crt".into(), json!(b64(ca_pem)));
                    d.insert("namespace".into(), json!(b64(ns)));
                }
                meta::set_annotation(&mut updated, SA_UID_ANNOTATION, &sa_uid);
                Ok(updated)
            })
            .await;
        match result {
            Ok(_) if stale.is_some() => tracing::info!(
                namespace = ns,
                secret = %name,
                old_kid = stale.as_deref().unwrap_or_default(),
                "re-issued a service account token secret whose signing key no longer verifies"
            ),
            Ok(_) => tracing::info!(namespace = ns, secret = %name, "filled service account token secret"),
            Err(s) if s.is_not_found() => {}
            Err(s) => return Err(s),
        }
    }
    if auto_generate {
        let listed: Vec<&str> = sa
            .get("secrets")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.get("name").and_then(Value::as_str))
                    .collect()
            })
            .unwrap_or_default();
        if !listed.iter().any(|n| live_names.iter().any(|l| l == n)) {
            create_token_secret(registry, ns, sa_name, &sa_uid).await?;
        }
    }
    Ok(Action::Done)
}

async fn delete_quietly(
    registry: &Registry,
    resource: &Resource,
    ns: &str,
    name: &str,
) -> Result<(), Status> {
    match registry
        .delete(resource, ns, name, &DeleteOptions::default())
        .await
    {
        Ok(_) => {
            tracing::info!(
                namespace = ns,
                secret = name,
                "deleted token secret of a deleted service account"
            );
            Ok(())
        }
        Err(s) if s.is_not_found() => Ok(()),
        Err(s) => Err(s),
    }
}

/// The pre-1.24 flow: a `<sa>-token-xxxxx` Secret, then listed in the ServiceAccount.
async fn create_token_secret(
    registry: &Registry,
    ns: &str,
    sa_name: &str,
    sa_uid: &str,
) -> Result<(), Status> {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = {
        let mut rng = rand::rng();
        (0..5)
            .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
            .collect()
    };
    let prefix = if sa_name.len() > 50 {
        &sa_name[..50]
    } else {
        sa_name
    };
    let name = format!("{prefix}-token-{suffix}");
    let secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": ns,
            "annotations": {SA_NAME_ANNOTATION: sa_name, SA_UID_ANNOTATION: sa_uid},
        },
        "type": SERVICE_ACCOUNT_TOKEN_TYPE,
    });
    match registry
        .create(resources::SECRETS, ns, secret, &WriteOptions::default())
        .await
    {
        Ok(_) => {}
        Err(s) if s.is_already_exists() || s.code == 403 || s.is_not_found() => return Ok(()),
        Err(s) => return Err(s),
    }
    let result = registry
        .update(
            resources::SERVICEACCOUNTS,
            ns,
            sa_name,
            "",
            &WriteOptions::default(),
            |current| {
                let mut updated = current.clone();
                let list = updated
                    .as_object_mut()
                    .map(|o| o.entry("secrets").or_insert_with(|| json!([])));
                if let Some(Value::Array(list)) = list {
                    list.push(json!({"name": name}));
                }
                Ok(updated)
            },
        )
        .await;
    match result {
        Ok(_) => Ok(()),
        // The ServiceAccount went away meanwhile; its Secret follows on the next pass.
        Err(s) if s.is_not_found() => Ok(()),
        Err(s) => Err(s),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Verifies only the kids it lists.
    struct Verifying(Vec<&'static str>);

    impl LegacyTokenSigner for Verifying {
        fn sign_legacy(&self, _: &LegacyClaims) -> Result<badge_token::Token, String> {
            Err("not signing".into())
        }
        fn verifies_kid(&self, kid: &str) -> bool {
            self.0.contains(&kid)
        }
    }

    fn token_with_kid(kid: &str) -> String {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        format!(
            "{}.{}.c2ln",
            b64(&json!({"alg": "RS256", "kid": kid})),
            b64(&json!({"sub": "x"}))
        )
    }

    fn secret_with(token: &str) -> Value {
        json!({
            "type": SERVICE_ACCOUNT_TOKEN_TYPE,
            "data": {"token": base64::engine::general_purpose::STANDARD.encode(token)},
        })
    }

    #[test]
    fn a_token_is_stale_when_its_kid_no_longer_verifies() {
        let token = token_with_kid("old");
        assert_eq!(token_kid(&token).as_deref(), Some("old"));
        let secret = secret_with(&token);
        assert_eq!(
            stale_kid(&secret, &Verifying(vec!["new"])).as_deref(),
            Some("old")
        );
        assert_eq!(stale_kid(&secret, &Verifying(vec!["old", "new"])), None);
        // Nothing to judge: no token, or one that is not a JWT.
        assert_eq!(stale_kid(&json!({"data": {}}), &Verifying(vec![])), None);
        assert_eq!(stale_kid(&secret_with("not-a-jwt"), &Verifying(vec![])), None);
    }
}
