//! `badge keys retire`: a key's verification ends early, but not while it is still in use
//! (each key counts the tokens it verified and when it last did) unless forced.

use badge_testkit::Credential::Admin;
use badge_testkit::TestServer;
use serde_json::Value;

use crate::{authenticated, server};

fn kid_of(token: &str) -> String {
    use base64::Engine;
    let header = token.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    header["kid"].as_str().unwrap().to_string()
}

/// `badge keys ARGS`: whether it succeeded, and its stdout and stderr together.
fn badge_keys(s: &TestServer, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_badge"))
        .arg("keys")
        .args(args)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn described_key(s: &TestServer, kid: &str) -> Value {
    let r = s.request("GET", "/badge/v1/keys", None, &[], Admin).unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid)
        .cloned()
        .unwrap_or_else(|| panic!("{kid} is not listed"))
}

fn jwks_kids(s: &TestServer) -> Vec<String> {
    let r = s.request("GET", "/openid/v1/jwks", None, &[], Admin).unwrap();
    assert_eq!(r.status, 200);
    r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_key_in_use_is_retired_only_by_force() {
    let s = server();
    s.kubectl_ok(&["create", "sa", "old", "-n", "default"]);
    let old_token = s.kubectl_ok(&["create", "token", "old", "-n", "default"]);
    let old_kid = kid_of(&old_token);

    let (ok, text) = badge_keys(&s, &["rotate", "--publish-lead-seconds", "0"]);
    assert!(ok, "{text}");
    let new_token = s.kubectl_ok(&["create", "token", "old", "-n", "default"]);
    let new_kid = kid_of(&new_token);
    assert_ne!(new_kid, old_kid);
    assert!(authenticated(&s, &new_token));
    assert!(authenticated(&s, &old_token));

    // Each key counted the one token it verified.
    let old = described_key(&s, &old_kid);
    assert_eq!(old["verifiedTokens"], 1, "{old}");
    let last_used = old["lastUsed"].as_str().unwrap().to_string();
    assert_eq!(described_key(&s, &new_kid)["verifiedTokens"], 1);
    let (ok, listed) = badge_keys(&s, &["list"]);
    assert!(ok, "{listed}");
    assert!(
        listed.contains("VERIFIED") && listed.contains("LAST USED"),
        "{listed}"
    );
    let old_line = listed.lines().find(|l| l.starts_with(&old_kid)).unwrap();
    let columns: Vec<&str> = old_line.split_whitespace().collect();
    assert_eq!(
        columns[columns.len() - 2..],
        ["1", last_used.as_str()],
        "{listed}"
    );

    // The signing key cannot be retired: rotate first.
    let (ok, text) = badge_keys(&s, &["retire", &new_kid]);
    assert!(
        !ok && text.contains("the key is the current signing key; rotate first"),
        "{text}"
    );

    // The old key verified a token just now: refused, naming when.
    let r = s
        .request(
            "POST",
            &format!("/badge/v1/keys/{old_kid}/retire"),
            None,
            &[],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 409, "{}", String::from_utf8_lossy(&r.body));
    let status = r.json();
    assert_eq!(status["reason"], "Conflict");
    assert_eq!(status["details"]["name"], old_kid.as_str());
    let (ok, text) = badge_keys(&s, &["retire", &old_kid]);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("Operation cannot be fulfilled on keys \"{old_kid}\"")),
        "{text}"
    );
    assert!(
        text.contains(&format!("last verified a token at {last_used}")),
        "{text}"
    );
    assert!(authenticated(&s, &old_token));

    let (ok, text) = badge_keys(&s, &["retire", &old_kid, "--force", "--window", "2h"]);
    assert!(ok, "{text}");
    assert!(text.contains(&format!("retired key {old_kid}")), "{text}");
    let old = described_key(&s, &old_kid);
    assert_eq!(old["state"], "Retired", "{old}");
    assert!(old["retiredEarlyAt"].is_string(), "{old}");
    assert!(old["revokedAt"].is_null(), "{old}");

    assert!(!authenticated(&s, &old_token));
    assert!(authenticated(&s, &new_token));
    let kids = jwks_kids(&s);
    assert!(!kids.contains(&old_kid) && kids.contains(&new_kid), "{kids:?}");
}
