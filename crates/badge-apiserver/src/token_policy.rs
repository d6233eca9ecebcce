//! TokenPolicy enforcement at TokenRequest: the namespace's policies selecting the
//! ServiceAccount refuse a request outside them (403 naming the policy) and shorten a lifetime
//! over their maximum (with a warning, as upstream does for its global maximum).

use std::collections::BTreeMap;

use badge_api::tokenpolicy::{Allowed, TokenAsked, TokenPolicy, evaluate};
use badge_api::{GroupResource, Status};
use badge_registry::{Filter, ReadFrom, Registry};
use serde_json::Value;

/// What the TokenRequest asks, checked against the policies of `namespace`.
pub(crate) struct Request<'a> {
    pub namespace: &'a str,
    pub service_account_name: &'a str,
    pub service_account: &'a badge_registry::CachedObject,
    pub audiences: &'a [String],
    pub bound_object_kind: Option<&'a str>,
    pub expiration_seconds: i64,
}

/// The lifetime to issue and its warnings, or 403 Forbidden naming the refusing policy.
pub(crate) async fn admit(registry: &Registry, request: Request<'_>) -> Result<Allowed, Status> {
    let unchanged = Allowed {
        expiration_seconds: request.expiration_seconds,
        warnings: Vec::new(),
        max_expiration_seconds: None,
    };
    let resource = badge_api::resources::TOKENPOLICIES;
    // Read from the watch cache, as upstream's admission plugins read their informers, with
    // no store round trip per TokenRequest: every policy (and ServiceAccount label) written
    // through this server before the request is in it (a client that applies a policy and
    // then asks for a token sees it applied), and one written through another server is in
    // it once the watch delivers it. With the store unreachable the cache answers as it is,
    // so the request fails, if at all, for its own reason, not for the policy read.
    if let Err(status) = registry.sync_own_writes().await {
        tracing::debug!(error = %status.message, "token policies read from a cache behind the store");
    }
    let every = Filter::default();
    let page = registry
        .list(resource, request.namespace, &every, ReadFrom::Any, 0, None)
        .await?;
    // The ServiceAccount as the cache holds it now, so disabling it applies to the very next
    // request.
    let fresh = registry.get_cached_object(
        badge_api::resources::SERVICEACCOUNTS,
        request.namespace,
        request.service_account_name,
    );
    refuse_disabled(
        request.namespace,
        fresh.as_deref().unwrap_or(request.service_account),
    )?;
    if page.items.is_empty() {
        return Ok(unchanged);
    }
    let policies: Vec<TokenPolicy> = page
        .items
        .iter()
        .filter_map(|item| serde_json::from_value(Value::clone(item)).ok())
        .collect();
    // Decoded only here: most namespaces have no policy, and issuing tokens is a hot path.
    let service_account = fresh.as_deref().unwrap_or(request.service_account).value();
    let name = badge_api::meta::name(&service_account);
    let labels: BTreeMap<String, String> = service_account
        .pointer("/metadata/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok())
        .unwrap_or_default();
    let asked = TokenAsked {
        service_account: name,
        service_account_labels: &labels,
        audiences: request.audiences,
        bound_object_kind: request.bound_object_kind,
        expiration_seconds: request.expiration_seconds,
    };
    evaluate(&policies, &asked).map_err(|denied| {
        tracing::info!(
            namespace = request.namespace,
            serviceaccount = name,
            policy = %denied.policy,
            "token request {denied}"
        );
        Status::forbidden(
            GroupResource {
                group: "",
                resource: "serviceaccounts",
            },
            name,
            &denied.to_string(),
        )
    })
}

/// A disabled ServiceAccount gets no token until it is enabled again.
fn refuse_disabled(namespace: &str, service_account: &badge_registry::CachedObject) -> Result<(), Status> {
    use badge_api::identity::DISABLED_LABEL;
    if !service_account.disabled() {
        return Ok(());
    }
    let object = service_account.value();
    let name = badge_api::meta::name(&object);
    tracing::info!(
        namespace,
        serviceaccount = name,
        "token request refused: the ServiceAccount is disabled"
    );
    Err(Status::forbidden(
        GroupResource {
            group: "",
            resource: "serviceaccounts",
        },
        name,
        &format!(
            "the ServiceAccount is disabled ({DISABLED_LABEL}=true); enable it with `badge serviceaccount enable {namespace}/{name}`"
        ),
    ))
}
