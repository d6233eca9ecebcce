#![allow(clippy::unwrap_used)]

use super::*;
use badge_api::status::GroupResource;
use http_body_util::BodyExt;
use parking_lot::Mutex;

const ORIGIN: &str = "https://console.test:8443";
const HOST: &str = "console.test:8443";

/// What the fake API saw of one request.
#[derive(Clone, Debug)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
    peer: Option<String>,
}

#[derive(Default)]
struct FakeApi {
    seen: Mutex<Vec<Seen>>,
}

impl Backend for FakeApi {
    fn call(
        &self,
        request: Request<Full<Bytes>>,
        peer: Arc<PeerIdentity>,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send + '_>> {
        let seen = Seen {
            method: request.method().clone(),
            uri: request.uri().to_string(),
            headers: request.headers().clone(),
            peer: peer.0.as_ref().map(|u| u.name.clone()),
        };
        self.seen.lock().push(seen.clone());
        Box::pin(async move {
            let bearer = seen
                .headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok());
            if seen.uri.ends_with("/selfsubjectreviews") {
                let user = match (bearer, &seen.peer) {
                    (Some("Bearer good-token"), _) => "alice".to_string(),
                    (None, Some(user)) => user.clone(),
                    _ => return response::status(&Status::unauthorized()),
                };
                return response::json(
                    StatusCode::CREATED,
                    &json!({"status": {"userInfo": {"username": user, "groups": ["system:authenticated"]}}}),
                );
            }
            if seen.method == Method::DELETE {
                let gr = GroupResource {
                    group: "",
                    resource: "secrets",
                };
                return response::status(&Status::forbidden(
                    gr,
                    "bootstrap-token-abcdef",
                    "User \"alice\" cannot delete resource \"secrets\" in API group \"\" in the namespace \"kube-system\"",
                ));
            }
            if let Some(query) = seen.uri.strip_prefix("/api/v1/namespaces/big/serviceaccounts?") {
                return big_list_page(query);
            }
            response::json(StatusCode::OK, &json!({"kind": "List", "items": []}))
        })
    }
}

/// ServiceAccounts `sa-0000` to `sa-1199`, paged as the API pages them (the continue token
/// is the offset); a label selector of `app=none` is refused as the API would refuse it.
fn big_list_page(query: &str) -> Response<Body> {
    let params = badge_api::query::QueryParams::parse(Some(query));
    if params.get("labelSelector") == Some("app=none") {
        return response::status(&Status::forbidden(
            GroupResource {
                group: "",
                resource: "serviceaccounts",
            },
            "",
            "User \"alice\" cannot list resource \"serviceaccounts\" in API group \"\" in the namespace \"big\"",
        ));
    }
    let limit: usize = params.get("limit").unwrap().parse().unwrap();
    let start: usize = params.get("continue").map_or(0, |c| c.parse().unwrap());
    let end = (start + limit).min(1200);
    let items: Vec<Value> = (start..end)
        .map(|i| json!({"metadata": {"name": format!("sa-{i:04}")}}))
        .collect();
    let mut metadata = json!({"resourceVersion": "42"});
    if end < 1200 {
        metadata["continue"] = json!(end.to_string());
    }
    response::json(
        StatusCode::OK,
        &json!({"apiVersion": "v1", "kind": "ServiceAccountList", "metadata": metadata, "items": items}),
    )
}

fn console() -> Console<FakeApi> {
    Console::new(FakeApi::default())
}

fn no_peer() -> Arc<PeerIdentity> {
    Arc::new(PeerIdentity(None))
}

fn cert_peer(user: &str) -> Arc<PeerIdentity> {
    Arc::new(PeerIdentity(Some(badge_auth::UserInfo::from_certificate(
        user,
        &[],
    ))))
}

fn request(method: &str, path: &str, body: &str, extra: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST);
    if method != "GET" {
        builder = builder
            .header(header::ORIGIN, ORIGIN)
            .header(header::CONTENT_TYPE, "application/json");
    }
    for (name, value) in extra {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body.to_string()))).unwrap()
}

async fn body_json(response: Response<Body>) -> Value {
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Logs in with the good token: the cookie header to send back, and the CSRF token.
async fn login(console: &Console<FakeApi>) -> (String, String) {
    let response = console
        .handle(
            request("POST", "/console/login", r#"{"token":"good-token"}"#, &[]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    let id = cookie.split(';').next().unwrap().to_string();
    let body = body_json(response).await;
    (id, body["csrfToken"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn every_response_carries_a_strict_content_security_policy() {
    let console = console();
    for path in [
        "/console/",
        "/console/app.js",
        "/console/app.css",
        "/console/session",
        "/console/nothing",
    ] {
        let response = console.handle(request("GET", path, "", &[]), no_peer()).await;
        let headers = response.headers();
        let csp = headers[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(csp.contains("default-src 'none'"), "{path}: {csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-inline"), "{path}: {csp}");
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{path}");
        assert_eq!(headers[header::X_FRAME_OPTIONS], "DENY", "{path}");
    }
}

#[test]
fn the_page_has_no_inline_script_or_style() {
    let page = INDEX_HTML.to_ascii_lowercase();
    for (at, _) in page.match_indices("<script") {
        let tag = &page[at..at + page[at..].find('>').unwrap()];
        assert!(tag.contains("src=\"/console/app.js\""), "inline script: {tag}");
    }
    assert!(!page.contains("<style"), "inline style block");
    assert!(!page.contains(" style="), "inline style attribute");
    assert!(!page.contains(" onclick="), "inline handler");
    assert!(
        !APP_JS.contains("localStorage"),
        "the page must not keep credentials in localStorage"
    );
    assert!(!APP_JS.contains("sessionStorage"));
}

#[tokio::test]
async fn login_sets_a_secure_http_only_strict_cookie_and_keeps_the_token_server_side() {
    let console = console();
    let response = console
        .handle(
            request("POST", "/console/login", r#"{"token":"good-token"}"#, &[]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_string();
    for attribute in ["HttpOnly", "Secure", "SameSite=Strict"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("good-token"));
    let body = body_json(response).await;
    assert_eq!(body["user"], "alice");
    assert!(!body.to_string().contains("good-token"), "{body}");
    assert_eq!(console.sessions.len(), 1);
}

#[tokio::test]
async fn a_refused_login_answers_with_the_servers_status_and_starts_no_session() {
    let console = console();
    let response = console
        .handle(
            request("POST", "/console/login", r#"{"token":"bad-token"}"#, &[]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(response.headers().get(header::SET_COOKIE).is_none());
    let body = body_json(response).await;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Unauthorized");
    assert!(console.sessions.is_empty());
}

#[tokio::test]
async fn api_requests_go_out_as_the_session_user_and_drop_what_the_browser_sent() {
    let console = console();
    let (cookie, _) = login(&console).await;
    let response = console
        .handle(
            request(
                "GET",
                "/console/api/api/v1/namespaces?limit=500",
                "",
                &[
                    ("cookie", &cookie),
                    ("authorization", "Bearer someone-else"),
                    ("impersonate-user", "system:admin"),
                ],
            ),
            cert_peer("mallory"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = console.backend.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.uri, "/api/v1/namespaces?limit=500");
    assert_eq!(seen.headers[header::AUTHORIZATION], "Bearer good-token");
    assert!(seen.headers.get("impersonate-user").is_none());
    // The connection's certificate is not mixed into a token session.
    assert_eq!(seen.peer, None);
}

#[tokio::test]
async fn api_requests_without_a_session_are_unauthorized() {
    let console = console();
    let response = console
        .handle(
            request("GET", "/console/api/api/v1/namespaces", "", &[]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = console
        .handle(
            request(
                "GET",
                "/console/api/api/v1/namespaces",
                "",
                &[("cookie", "__Host-badge-console=guess")],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(console.backend.seen.lock().is_empty());
}

#[tokio::test]
async fn a_write_without_the_csrf_token_is_refused_before_reaching_the_api() {
    let console = console();
    let (cookie, csrf) = login(&console).await;
    let calls = console.backend.seen.lock().len();
    let path = "/console/api/api/v1/namespaces/kube-system/secrets";
    for extra in [
        vec![("cookie", cookie.as_str())],
        vec![("cookie", cookie.as_str()), ("x-csrf-token", "wrong")],
    ] {
        let response = console
            .handle(request("POST", path, "{}", &extra), no_peer())
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        assert!(
            body_json(response).await["message"]
                .as_str()
                .unwrap()
                .contains("CSRF")
        );
    }
    assert_eq!(console.backend.seen.lock().len(), calls);
    let response = console
        .handle(
            request(
                "POST",
                path,
                "{}",
                &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(console.backend.seen.lock().len(), calls + 1);
}

#[tokio::test]
async fn a_cross_origin_request_is_refused() {
    let console = console();
    let (cookie, csrf) = login(&console).await;
    let calls = console.backend.seen.lock().len();
    let mut req = request(
        "POST",
        "/console/api/api/v1/namespaces",
        "{}",
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    );
    req.headers_mut()
        .insert(header::ORIGIN, HeaderValue::from_static("https://evil.test"));
    assert_eq!(
        console.handle(req, no_peer()).await.status(),
        StatusCode::FORBIDDEN
    );
    let req = request(
        "GET",
        "/console/api/api/v1/namespaces",
        "",
        &[("cookie", &cookie), ("sec-fetch-site", "cross-site")],
    );
    assert_eq!(
        console.handle(req, no_peer()).await.status(),
        StatusCode::FORBIDDEN
    );
    // A write that names no origin at all is not taken for the console's own.
    let mut req = request("POST", "/console/login", r#"{"token":"good-token"}"#, &[]);
    req.headers_mut().remove(header::ORIGIN);
    assert_eq!(
        console.handle(req, no_peer()).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(console.backend.seen.lock().len(), calls);
}

#[tokio::test]
async fn a_refused_action_shows_the_servers_status() {
    let console = console();
    let (cookie, csrf) = login(&console).await;
    let response = console
        .handle(
            request(
                "DELETE",
                "/console/api/api/v1/namespaces/kube-system/secrets/bootstrap-token-abcdef",
                "",
                &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(response.headers().get(header::CONTENT_SECURITY_POLICY).is_some());
    let body = body_json(response).await;
    assert_eq!(body["kind"], "Status");
    assert_eq!(body["reason"], "Forbidden");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("cannot delete resource \"secrets\"")
    );
}

#[tokio::test]
async fn logout_forgets_the_credential() {
    let console = console();
    let (cookie, csrf) = login(&console).await;
    let response = console
        .handle(
            request("POST", "/console/logout", "", &[("cookie", &cookie)]),
            no_peer(),
        )
        .await;
    assert_eq!(
        response.status(),
        StatusCode::FORBIDDEN,
        "logout needs the CSRF token"
    );
    let response = console
        .handle(
            request(
                "POST",
                "/console/logout",
                "",
                &[("cookie", &cookie), ("x-csrf-token", &csrf)],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert!(console.sessions.is_empty());
    let response = console
        .handle(
            request("GET", "/console/session", "", &[("cookie", &cookie)]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_certificate_session_needs_the_same_certificate_on_every_request() {
    let console = console();
    let response = console
        .handle(
            request("POST", "/console/login", r#"{"certificate":true}"#, &[]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let response = console
        .handle(
            request("POST", "/console/login", r#"{"certificate":true}"#, &[]),
            cert_peer("bob"),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let cookie = response.headers()[header::SET_COOKIE].to_str().unwrap();
    let cookie = cookie.split(';').next().unwrap().to_string();
    let path = "/console/api/api/v1/nodes";
    let response = console
        .handle(request("GET", path, "", &[("cookie", &cookie)]), cert_peer("bob"))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = console.backend.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.peer.as_deref(), Some("bob"));
    assert!(seen.headers.get(header::AUTHORIZATION).is_none());
    for peer in [no_peer(), cert_peer("mallory")] {
        let response = console
            .handle(request("GET", path, "", &[("cookie", &cookie)]), peer)
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
}

#[tokio::test]
async fn revoking_a_token_sends_the_merge_patch_as_is() {
    let console = console();
    let (cookie, csrf) = login(&console).await;
    let path = "/console/api/apis/identity.badge.dev/v1/namespaces/shop/issuedtokens/web-1a2b";
    let mut req = request(
        "PATCH",
        path,
        r#"{"spec":{"revoked":true}}"#,
        &[("cookie", &cookie), ("x-csrf-token", &csrf)],
    );
    req.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/merge-patch+json"),
    );
    assert_eq!(console.handle(req, no_peer()).await.status(), StatusCode::OK);
    let seen = console.backend.seen.lock().last().cloned().unwrap();
    assert_eq!(seen.method, Method::PATCH);
    assert_eq!(
        seen.uri,
        "/apis/identity.badge.dev/v1/namespaces/shop/issuedtokens/web-1a2b"
    );
    assert_eq!(seen.headers[header::CONTENT_TYPE], "application/merge-patch+json");
}

#[tokio::test]
async fn logging_in_again_ends_the_previous_session() {
    let console = console();
    let (old, _) = login(&console).await;
    let response = console
        .handle(
            request(
                "POST",
                "/console/login",
                r#"{"token":"good-token"}"#,
                &[("cookie", &old)],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(console.sessions.len(), 1);
    let response = console
        .handle(
            request("GET", "/console/session", "", &[("cookie", &old)]),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}

fn login_from(token: &str, client: [u8; 4]) -> Request<Full<Bytes>> {
    let mut req = request(
        "POST",
        "/console/login",
        &json!({ "token": token }).to_string(),
        &[],
    );
    req.extensions_mut()
        .insert(throttle::ClientAddress(std::net::IpAddr::from(client)));
    req
}

#[tokio::test]
async fn repeated_failed_logins_from_one_address_are_throttled_with_a_status() {
    let console = console();
    let attacker = [198, 51, 100, 7];
    for _ in 0..throttle::LOGIN_BURST {
        let response = console.handle(login_from("bad-token", attacker), no_peer()).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    }
    let reviews = console.backend.seen.lock().len();
    // Throttled: neither a wrong nor a right credential is tried any more.
    for token in ["bad-token", "good-token"] {
        let response = console.handle(login_from(token, attacker), no_peer()).await;
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        let retry: u64 = response.headers()[header::RETRY_AFTER]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=throttle::LOGIN_REFILL.as_secs()).contains(&retry), "{retry}");
        assert!(response.headers().get(header::SET_COOKIE).is_none());
        let body = body_json(response).await;
        assert_eq!(body["kind"], "Status");
        assert_eq!(body["status"], "Failure");
        assert_eq!(body["reason"], "TooManyRequests");
        assert_eq!(body["code"], 429);
        assert_eq!(body["message"], "Too many requests, please try again later.");
        assert_eq!(body["details"]["retryAfterSeconds"], retry);
    }
    assert_eq!(console.backend.seen.lock().len(), reviews);
    assert!(console.sessions.is_empty());

    // Another address logs in as usual.
    let response = console
        .handle(login_from("good-token", [203, 0, 113, 9]), no_peer())
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

#[tokio::test]
async fn successful_logins_do_not_count_against_an_address() {
    let console = console();
    let office = [192, 0, 2, 1];
    for _ in 0..3 * throttle::LOGIN_BURST {
        let response = console.handle(login_from("good-token", office), no_peer()).await;
        assert_eq!(response.status(), StatusCode::CREATED);
    }
    let response = console.handle(login_from("bad-token", office), no_peer()).await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    let response = console.handle(login_from("good-token", office), no_peer()).await;
    assert_eq!(response.status(), StatusCode::CREATED);
}

fn search_names(body: &Value) -> Vec<String> {
    body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn a_search_answers_bounded_pages_of_matching_names_across_api_pages() {
    let console = console();
    let (cookie, _) = login(&console).await;
    let search = |query: String| {
        let console = &console;
        let cookie = cookie.clone();
        async move {
            let path = format!("/console/search/api/v1/namespaces/big/serviceaccounts?{query}");
            let response = console
                .handle(request("GET", &path, "", &[("cookie", &cookie)]), no_peer())
                .await;
            (response.status(), body_json(response).await)
        }
    };
    // Names containing "9" run across the API's pages of 500; pages of 100 resume mid-page.
    let expected: Vec<String> = (0..1200)
        .map(|i| format!("sa-{i:04}"))
        .filter(|n| n.contains('9'))
        .collect();
    let mut seen = Vec::new();
    let mut next = String::new();
    loop {
        let (code, body) = search(format!("contains=9&limit=100&continue={next}")).await;
        assert_eq!(code, StatusCode::OK, "{body}");
        assert_eq!(body["kind"], "ServiceAccountList");
        assert_eq!(body["metadata"]["resourceVersion"], "42");
        let page = search_names(&body);
        assert!(page.len() <= 100);
        seen.extend(page);
        match body["metadata"]["continue"].as_str() {
            Some(token) => next = token.to_string(),
            None => break,
        }
    }
    assert_eq!(seen, expected);
    // Exact names, and the API's own requests carried the session's credential.
    let (_, body) = search("names=sa-0007,sa-1199,sa-5000".into()).await;
    assert_eq!(search_names(&body), ["sa-0007", "sa-1199"]);
    let last = console.backend.seen.lock().last().cloned().unwrap();
    assert_eq!(last.headers[header::AUTHORIZATION], "Bearer good-token");
    assert!(last.uri.contains("limit=500"), "{}", last.uri);
    // The API's refusal is the answer.
    let (code, body) = search("labelSelector=app%3Dnone".into()).await;
    assert_eq!(code, StatusCode::FORBIDDEN);
    assert_eq!(body["reason"], "Forbidden");
    // Without a session nothing is read.
    let response = console
        .handle(
            request(
                "GET",
                "/console/search/api/v1/namespaces/big/serviceaccounts",
                "",
                &[],
            ),
            no_peer(),
        )
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
}
