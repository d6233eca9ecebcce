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
    let Some(resource) = badge_api::resources::lookup(badge_api::identity::GROUP, "v1", "tokenpolicies")
    else {
        return Ok(unchanged);
    };
    let page = registry
        .list(
            resource,
            request.namespace,
            &Filter::default(),
            // A policy written before the request applies to it, as RBAC would.
            ReadFrom::Latest,
            0,
            None,
        )
        .await?;
    if page.items.is_empty() {
        return Ok(unchanged);
    }
    let policies: Vec<TokenPolicy> = page
        .items
        .iter()
        .filter_map(|item| serde_json::from_value(Value::clone(item)).ok())
        .collect();
    // Decoded only here: most namespaces have no policy, and issuing tokens is a hot path.
    let service_account = request.service_account.value();
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
