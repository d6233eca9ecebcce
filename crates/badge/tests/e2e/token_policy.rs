//! TokenPolicy with real kubectl: an admin applies policies, `kubectl create token` outside
//! them is refused naming the policy, and a lifetime over the maximum is shortened with the
//! Warning kubectl prints.

use badge_testkit::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

const POLICY: &str = r#"
apiVersion: identity.badge.dev/v1
kind: TokenPolicy
metadata:
  name: web-vault
  namespace: shop
spec:
  serviceAccountSelector:
    matchLabels:
      tier: front
  allowedAudiences: [vault]
  maxExpirationSeconds: 1800
"#;

#[test]
fn kubectl_create_token_is_refused_or_shortened_by_a_policy() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    s.kubectl_ok(&["label", "serviceaccount", "web", "-n", "shop", "tier=front"]);
    let applied = s.kubectl_with_stdin(&["apply", "-f", "-"], Some(POLICY));
    assert!(
        applied.status.success(),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let listed = s.kubectl_ok(&["get", "tokenpolicies", "-n", "shop"]);
    assert!(
        listed.contains("web-vault") && listed.contains("1800"),
        "{listed}"
    );

    let refused = s.kubectl_err(&["create", "token", "web", "-n", "shop", "--audience", "other"]);
    assert!(
        refused.contains(
            "serviceaccounts \"web\" is forbidden: denied by TokenPolicy \"web-vault\": audience \"other\" is not allowed (allowed: vault)"
        ),
        "{refused}"
    );

    let out = s.kubectl(&[
        "create",
        "token",
        "web",
        "-n",
        "shop",
        "--audience",
        "vault",
        "--duration",
        "2h",
        "-o",
        "json",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains(
            "Warning: requested expiration of 7200 seconds shortened to 1800 seconds by TokenPolicy \"web-vault\""
        ),
        "{stderr}"
    );
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["spec"]["expirationSeconds"], 1800);
    let time = |pointer: &str| {
        reply
            .pointer(pointer)
            .unwrap()
            .as_str()
            .unwrap()
            .parse::<jiff::Timestamp>()
            .unwrap()
    };
    assert_eq!(
        time("/status/expirationTimestamp").as_second() - time("/metadata/creationTimestamp").as_second(),
        1800
    );

    // Removing the label takes the ServiceAccount out of the policy.
    s.kubectl_ok(&["label", "serviceaccount", "web", "-n", "shop", "tier-"]);
    s.kubectl_ok(&["create", "token", "web", "-n", "shop", "--audience", "other"]);
}
