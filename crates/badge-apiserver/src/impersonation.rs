//! Impersonation: `Impersonate-User`, `-Group`, `-Uid` and `-Extra-*` headers, each allowed
//! by the `impersonate` verb on what it names (`endpoints/filters/impersonation.go`).

use badge_api::Status;
use badge_auth::{Attributes, Authorizer, Decision, UserInfo, authorizer::forbidden_message};

/// Whether the request acts as another user.
pub(crate) fn requested(headers: &http::HeaderMap) -> bool {
    headers.contains_key("impersonate-user")
}

/// Applies `Impersonate-*` headers, each allowed by the `impersonate` verb
/// (`endpoints/filters/impersonation.go`).
pub(crate) fn impersonate(
    authorizer: &dyn Authorizer,
    headers: &http::HeaderMap,
    user: UserInfo,
) -> Result<UserInfo, Status> {
    // Nearly every request names no impersonation header: one pass over the names, rather
    // than a hashed lookup for each header that could.
    if !headers
        .keys()
        .any(|name| name.as_str().starts_with("impersonate-"))
    {
        return Ok(user);
    }
    let value = |v: &http::HeaderValue| {
        v.to_str()
            .map(str::to_string)
            .map_err(|_| Status::bad_request("invalid impersonation header"))
    };
    let target_user = headers.get("impersonate-user").map(value).transpose()?;
    let groups: Vec<String> = headers
        .get_all("impersonate-group")
        .iter()
        .map(value)
        .collect::<Result<_, _>>()?;
    let uid = headers.get("impersonate-uid").map(value).transpose()?;
    let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (name, v) in headers {
        if let Some(key) = name.as_str().strip_prefix("impersonate-extra-") {
            let key = percent_encoding::percent_decode_str(key)
                .decode_utf8_lossy()
                .to_string();
            extra.entry(key).or_default().push(value(v)?);
        }
    }
    let Some(target) = target_user else {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(user);
        }
        return Err(Status::bad_request(format!(
            "requested {:?} without impersonating a user",
            groups.iter().chain(uid.iter()).collect::<Vec<_>>()
        )));
    };
    let check = |verb_target: Attributes| -> Result<(), Status> {
        match authorizer.authorize(&verb_target) {
            Decision::Allow => Ok(()),
            _ => {
                let message = forbidden_message(&verb_target);
                let gr = badge_api::GroupResource {
                    group: &verb_target.api_group,
                    resource: &verb_target.resource,
                };
                Err(Status::forbidden(gr, &verb_target.name, &message))
            }
        }
    };
    let base = |resource: &str, group: &str, name: &str| Attributes {
        user: user.clone(),
        verb: "impersonate".into(),
        is_resource_request: true,
        api_group: group.into(),
        resource: resource.into(),
        name: name.into(),
        ..Default::default()
    };
    let mut impersonated = UserInfo {
        name: target.clone(),
        ..Default::default()
    };
    if let Some(rest) = target.strip_prefix("system:serviceaccount:") {
        let (ns, name) = rest.split_once(':').unwrap_or(("", rest));
        let mut attrs = base("serviceaccounts", "", name);
        attrs.namespace = ns.to_string();
        check(attrs)?;
        impersonated.groups.push("system:serviceaccounts".into());
        impersonated.groups.push(format!("system:serviceaccounts:{ns}"));
    } else {
        check(base("users", "", &target))?;
    }
    for group in &groups {
        check(base("groups", "", group))?;
        impersonated.groups.push(group.clone());
    }
    if let Some(uid) = uid {
        check(base("uids", "authentication.k8s.io", &uid))?;
        impersonated.uid = uid;
    }
    for (key, values) in &extra {
        for v in values {
            let mut attrs = base("userextras", "authentication.k8s.io", v);
            attrs.subresource = key.clone();
            check(attrs)?;
        }
    }
    impersonated.extra = extra;
    if impersonated.name == badge_auth::user::ANONYMOUS {
        impersonated
            .groups
            .push(badge_auth::user::ALL_UNAUTHENTICATED.into());
    } else {
        impersonated.add_authenticated_group();
    }
    Ok(impersonated)
}
