//! Request path parsing, as `k8s.io/apiserver/pkg/endpoints/request/requestinfo.go` does it:
//! one parse feeds both authorization and the handler, so the two can never disagree about
//! what a path names.

use percent_encoding::percent_decode_str;

/// What a request is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// True for `/api/...` and `/apis/...` requests naming a resource.
    pub is_resource_request: bool,
    /// The decoded path, for non-resource requests.
    pub path: String,
    /// The Kubernetes verb (`get`, `list`, `watch`, `create`, ...), or the lowercased HTTP
    /// method for non-resource requests.
    pub verb: String,
    /// `api` or `apis` (empty for non-resource requests).
    pub api_prefix: String,
    /// The API group, "" for the core group.
    pub api_group: String,
    /// The API version.
    pub api_version: String,
    /// The namespace, "" for cluster-scoped requests.
    pub namespace: String,
    /// The resource, plural.
    pub resource: String,
    /// The subresource, "" for the object itself.
    pub subresource: String,
    /// The object's name, "" when the path names none.
    pub name: String,
    /// True when the path named a namespace as a scope (`/namespaces/NS/<resource>...`), as
    /// opposed to naming a Namespace object (`/namespaces/NS`, `/namespaces/NS/status`). A
    /// cluster-scoped resource under such a path names nothing (CVE-2019-11247).
    pub namespace_scoped_path: bool,
    /// True when the verb came from the legacy `/watch/` path prefix.
    pub watch_path: bool,
}

/// Why a path cannot be parsed into a request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("invalid resource name {0:?}: may not contain '/' or '%', or be '.' or '..'")]
    /// A name segment that may not be a name.
    InvalidName(String),
    #[error("the path contains an empty segment")]
    /// Two slashes in a row.
    EmptySegment,
    #[error("the path is not valid UTF-8")]
    /// Percent-decoding gave bytes that are not UTF-8.
    NotUtf8,
}

/// Subresources of a namespace itself (`/api/v1/namespaces/NAME/status`).
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parses a request. `query` is the raw query string (without `?`).
pub fn parse(method: &str, raw_path: &str, query: Option<&str>) -> Result<RequestInfo, PathError> {
    let path = decode(raw_path)?.into_owned();
    let non_resource = |path: String| RequestInfo {
        is_resource_request: false,
        verb: method.to_ascii_lowercase(),
        path,
        ..Default::default()
    };
    let trimmed = raw_path.trim_matches('/');
    let prefix = trimmed.split('/').next().unwrap_or_default();
    if trimmed.is_empty() || (prefix != "api" && prefix != "apis") {
        return Ok(non_resource(path));
    }
    // Discovery documents (`/api`, `/api/v1`, `/apis`, `/apis/g`, `/apis/g/v`) are not
    // resource requests.
    let group_parts = if prefix == "api" { 1 } else { 2 };
    if trimmed.split('/').count() < 1 + group_parts + 1 {
        return Ok(non_resource(path));
    }
    // Segments borrow from the path unless they were percent-encoded: one allocation for
    // the list instead of one per segment, on every request.
    let mut parts: Vec<std::borrow::Cow<'_, str>> = Vec::with_capacity(8);
    for raw in trimmed.split('/') {
        if raw.is_empty() {
            return Err(PathError::EmptySegment);
        }
        parts.push(decode(raw)?);
    }
    let mut info = RequestInfo {
        is_resource_request: true,
        path,
        api_prefix: prefix.to_string(),
        ..Default::default()
    };
    let mut rest = &parts[1..];
    if prefix == "apis" {
        info.api_group = rest[0].to_string();
        rest = &rest[1..];
    }
    info.api_version = rest[0].to_string();
    rest = &rest[1..];

    if rest.first().is_some_and(|s| s == "watch") && rest.len() > 1 {
        info.watch_path = true;
        rest = &rest[1..];
    }
    if rest.first().is_some_and(|s| s == "namespaces") && rest.len() > 1 {
        info.namespace = rest[1].to_string();
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2].as_ref()) {
            info.namespace_scoped_path = true;
            rest = &rest[2..];
        }
    }
    if let Some(resource) = rest.first() {
        info.resource = resource.to_string();
    }
    if let Some(name) = rest.get(1) {
        info.name = name.to_string();
    }
    if let Some(sub) = rest.get(2) {
        info.subresource = sub.to_string();
    }
    if rest.len() > 3 {
        // Deeper paths name nothing; the handler answers 404.
        info.subresource = rest[2..].join("/");
    }
    // `/api/v1/namespaces/NAME` names a namespace: the "namespace" is the object itself.
    if info.resource == "namespaces" && !info.name.is_empty() && !info.namespace_scoped_path {
        info.namespace = info.name.clone();
    }
    for segment in [&info.namespace, &info.name] {
        if !segment.is_empty() && !is_valid_path_segment_name(segment) {
            return Err(PathError::InvalidName(segment.clone()));
        }
    }

    // As upstream: the `/watch/` prefix makes the verb `watch` whatever the method; a GET
    // without a name is a list or a watch, and then an exact `metadata.name` field selector
    // names the request, so a grant on one name allows listing and watching that one object.
    if info.watch_path {
        info.verb = "watch".to_string();
        return Ok(info);
    }
    info.verb = match method {
        "GET" | "HEAD" if info.name.is_empty() => {
            let params = crate::query::QueryParams::parse(query);
            if let Some(name) = params
                .get("fieldSelector")
                .and_then(|text| crate::selectors::FieldSelector::parse(text).ok())
                .and_then(|selector| selector.required_value("metadata.name").map(str::to_string))
                .filter(|name| is_valid_path_segment_name(name))
            {
                info.name = name;
            }
            if params.watch() { "watch" } else { "list" }
        }
        "GET" | "HEAD" => "get",
        "POST" => "create",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" if info.name.is_empty() => "deletecollection",
        "DELETE" => "delete",
        other => {
            return Ok(RequestInfo {
                verb: other.to_ascii_lowercase(),
                ..info
            });
        }
    }
    .to_string();
    Ok(info)
}

/// `raw` percent-decoded. Nearly every path has no `%`: it is then its own decoding,
/// borrowed without running the decoder over it.
fn decode(raw: &str) -> Result<std::borrow::Cow<'_, str>, PathError> {
    if !raw.as_bytes().contains(&b'%') {
        return Ok(std::borrow::Cow::Borrowed(raw));
    }
    percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| PathError::NotUtf8)
}

/// `path.IsValidPathSegmentName`: a name must be usable as one path segment.
pub fn is_valid_path_segment_name(name: &str) -> bool {
    name != "." && name != ".." && !name.contains('/') && !name.contains('%')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_without_percent_is_its_own_decoding() {
        for raw in [
            "/api/v1/namespaces/default/serviceaccounts/app/token",
            "/apis/authentication.k8s.io/v1/tokenreviews",
            "",
            "naïve/€",
            "a%2Fb",
            "%E2%82%AC",
            "%zz",
            "bad%ff",
        ] {
            let decoded = decode(raw).map_err(|e| e.to_string());
            let generic = percent_decode_str(raw)
                .decode_utf8()
                .map_err(|_| PathError::NotUtf8.to_string());
            assert_eq!(decoded, generic, "{raw}");
        }
        assert!(matches!(decode("/api/v1"), Ok(std::borrow::Cow::Borrowed(_))));
    }

    fn p(method: &str, path: &str, query: Option<&str>) -> RequestInfo {
        parse(method, path, query).unwrap_or_default()
    }

    #[test]
    fn namespaced_resources() {
        let i = p("GET", "/api/v1/namespaces/demo/serviceaccounts/sa", None);
        assert!(i.is_resource_request);
        assert_eq!(
            (
                i.verb.as_str(),
                i.namespace.as_str(),
                i.resource.as_str(),
                i.name.as_str()
            ),
            ("get", "demo", "serviceaccounts", "sa")
        );
        let i = p("POST", "/api/v1/namespaces/demo/serviceaccounts/sa/token", None);
        assert_eq!((i.verb.as_str(), i.subresource.as_str()), ("create", "token"));
        let i = p(
            "GET",
            "/api/v1/namespaces/demo/pods",
            Some("watch=true&resourceVersion=5"),
        );
        assert_eq!(i.verb, "watch");
        let i = p("GET", "/api/v1/watch/namespaces/demo/pods", None);
        assert_eq!((i.verb.as_str(), i.resource.as_str()), ("watch", "pods"));
        let i = p("DELETE", "/api/v1/namespaces/demo/pods", None);
        assert_eq!(i.verb, "deletecollection");
    }

    #[test]
    fn namespaces_themselves() {
        let i = p("GET", "/api/v1/namespaces/demo", None);
        assert_eq!(
            (i.resource.as_str(), i.name.as_str(), i.namespace.as_str()),
            ("namespaces", "demo", "demo")
        );
        let i = p("PUT", "/api/v1/namespaces/demo/finalize", None);
        assert_eq!(
            (
                i.resource.as_str(),
                i.name.as_str(),
                i.subresource.as_str(),
                i.verb.as_str()
            ),
            ("namespaces", "demo", "finalize", "update")
        );
        let i = p("GET", "/api/v1/namespaces", None);
        assert_eq!(
            (i.resource.as_str(), i.verb.as_str(), i.namespace.as_str()),
            ("namespaces", "list", "")
        );
    }

    #[test]
    fn groups_and_cluster_scope() {
        let i = p(
            "GET",
            "/apis/rbac.authorization.k8s.io/v1/clusterroles/admin",
            None,
        );
        assert_eq!(
            (
                i.api_group.as_str(),
                i.api_version.as_str(),
                i.resource.as_str(),
                i.name.as_str()
            ),
            ("rbac.authorization.k8s.io", "v1", "clusterroles", "admin")
        );
        let i = p("GET", "/api/v1/nodes", None);
        assert_eq!((i.resource.as_str(), i.namespace.as_str()), ("nodes", ""));
    }

    #[test]
    fn discovery_and_other_paths_are_non_resource() {
        for path in [
            "/api",
            "/api/v1",
            "/apis",
            "/apis/rbac.authorization.k8s.io",
            "/apis/rbac.authorization.k8s.io/v1",
            "/healthz",
            "/openid/v1/jwks",
            "/",
        ] {
            let i = p("GET", path, None);
            assert!(!i.is_resource_request, "{path}");
            assert_eq!(i.verb, "get");
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        assert!(matches!(
            parse("GET", "/api/v1/namespaces/demo/secrets/..", None),
            Err(PathError::InvalidName(_))
        ));
        assert!(matches!(
            parse("GET", "/api/v1/namespaces/demo/secrets/a%2Fb", None),
            Err(PathError::InvalidName(_))
        ));
        assert!(matches!(
            parse("GET", "/api/v1/namespaces//secrets", None),
            Err(PathError::EmptySegment)
        ));
        assert!(matches!(
            parse("GET", "/api/v1/namespaces/%ff/secrets", None),
            Err(PathError::NotUtf8)
        ));
    }

    #[test]
    fn a_name_field_selector_names_a_list_or_watch() {
        let i = p(
            "GET",
            "/api/v1/namespaces/demo/secrets",
            Some("watch=true&fieldSelector=metadata.name%3Dmine"),
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "mine"));
        let i = p(
            "GET",
            "/api/v1/namespaces/demo/secrets",
            Some("fieldSelector=metadata.name==mine,type=x"),
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("list", "mine"));
        // Not an exact match, or not a valid path segment: no name.
        for query in [
            "fieldSelector=metadata.name!=mine",
            "fieldSelector=metadata.name=a/b",
            "fieldSelector=type=x",
        ] {
            let i = p("GET", "/api/v1/namespaces/demo/secrets", Some(query));
            assert_eq!((i.verb.as_str(), i.name.as_str()), ("list", ""), "{query}");
        }
        // Deletes and the legacy watch prefix are not named by a selector (as upstream).
        let i = p(
            "DELETE",
            "/api/v1/namespaces/demo/secrets",
            Some("fieldSelector=metadata.name=mine"),
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("deletecollection", ""));
        let i = p(
            "GET",
            "/api/v1/watch/namespaces/demo/secrets",
            Some("fieldSelector=metadata.name=mine"),
        );
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", ""));
    }

    #[test]
    fn named_paths_keep_their_verb() {
        // `?watch=true` on a named path stays a get, as upstream.
        let i = p("GET", "/api/v1/namespaces/demo/secrets/mine", Some("watch=true"));
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("get", "mine"));
        let i = p("GET", "/api/v1/watch/namespaces/demo/secrets/mine", None);
        assert_eq!(
            (i.verb.as_str(), i.name.as_str(), i.watch_path),
            ("watch", "mine", true)
        );
        // The watch prefix decides the verb whatever the method.
        let i = p("DELETE", "/api/v1/watch/namespaces/demo/secrets", None);
        assert_eq!(i.verb, "watch");
        // A percent-encoded prefix is the same prefix.
        let i = p("GET", "/api/v1/%77atch/namespaces/demo/secrets/mi%6Ee", None);
        assert_eq!((i.verb.as_str(), i.name.as_str()), ("watch", "mine"));
    }

    #[test]
    fn namespace_scope_is_told_apart_from_the_namespace_object() {
        for (path, scoped, resource, namespace, name) in [
            ("/api/v1/namespaces/a/namespaces", true, "namespaces", "a", ""),
            ("/api/v1/namespaces/a/namespaces/a", true, "namespaces", "a", "a"),
            (
                "/api/v1/namespaces/a/namespaces/kube-system",
                true,
                "namespaces",
                "a",
                "kube-system",
            ),
            ("/api/v1/namespaces/a/nodes/n", true, "nodes", "a", "n"),
            ("/api/v1/namespaces/a", false, "namespaces", "a", "a"),
            ("/api/v1/namespaces/a/status", false, "namespaces", "a", "a"),
            ("/api/v1/namespaces/a/finalize", false, "namespaces", "a", "a"),
            ("/api/v1/namespaces", false, "namespaces", "", ""),
            ("/api/v1/namespaces/a/secrets", true, "secrets", "a", ""),
        ] {
            let i = p("GET", path, None);
            assert_eq!(
                (
                    i.namespace_scoped_path,
                    i.resource.as_str(),
                    i.namespace.as_str(),
                    i.name.as_str()
                ),
                (scoped, resource, namespace, name),
                "{path}"
            );
        }
    }
}
