//! Signing keys that rotate themselves (`--service-account-key-rotation-period`), with the
//! schedule compressed to seconds: every token verifies while its key is active or retired,
//! stops at revocation, and an outside verifier (PyJWT through the JWKS) has each key before
//! any token it signed exists, on one server and across servers sharing etcd.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use badge_testkit::Credential::Admin;
use badge_testkit::TestServer;
use badge_testkit::etcd::EtcdCluster;
use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_badge");
const ISSUER: &str = "https://kubernetes.default.svc.cluster.local";
/// A period of a few seconds and a shorter publish lead, so a test sees several rotations.
const ROTATION: [&str; 3] = [
    "--service-account-key-rotation-period=4s",
    "--service-account-key-publish-lead=2s",
    "--service-account-extend-token-expiration=false",
];
/// How long a test waits for the rotations it needs before giving up.
const DEADLINE: Duration = Duration::from_secs(120);

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

fn issue(s: &TestServer, sa: &str) -> String {
    let body = json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}});
    let r = s
        .request(
            "POST",
            &format!("/api/v1/namespaces/default/serviceaccounts/{sa}/token"),
            Some(serde_json::to_vec(&body).unwrap()),
            &[("content-type", "application/json")],
            Admin,
        )
        .unwrap();
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    r.json()["status"]["token"].as_str().unwrap().to_string()
}

/// One JWKS fetch: its body and the kids in it.
struct Fetch {
    body: Vec<u8>,
    kids: BTreeSet<String>,
}

fn fetch_jwks(s: &TestServer) -> Fetch {
    let r = s.request("GET", "/openid/v1/jwks", None, &[], Admin).unwrap();
    assert_eq!(r.status, 200);
    let kids = r.json()["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    Fetch { body: r.body, kids }
}

/// A token and the round it was issued in: every JWKS fetch of that round and before came
/// first.
struct Issued {
    token: String,
    kid: String,
    round: usize,
}

/// What the observer saw: per server, its JWKS fetches by round; the tokens in order.
struct Observed {
    fetches: Vec<Vec<Fetch>>,
    tokens: Vec<Issued>,
}

/// Rounds of: fetch every server's JWKS, then issue a token (from each server in turn),
/// until tokens signed by `signers` distinct keys exist.
fn observe(servers: &[&TestServer], sa: &str, signers: usize) -> Observed {
    let mut seen = Observed {
        fetches: servers.iter().map(|_| Vec::new()).collect(),
        tokens: Vec::new(),
    };
    let deadline = Instant::now() + DEADLINE;
    for round in 0.. {
        let kids: BTreeSet<&str> = seen.tokens.iter().map(|t| t.kid.as_str()).collect();
        if kids.len() >= signers {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} signing keys seen before the deadline",
            kids.len()
        );
        for (i, s) in servers.iter().enumerate() {
            seen.fetches[i].push(fetch_jwks(s));
        }
        let token = issue(servers[round % servers.len()], sa);
        seen.tokens.push(Issued {
            kid: kid_of(&token),
            token,
            round,
        });
        std::thread::sleep(Duration::from_millis(100));
    }
    seen
}

/// Every token's key was in every server's JWKS in a fetch made before the token was
/// issued; returns, per token, the earliest such JWKS (of the first server).
fn assert_published_before_use(seen: &Observed) -> Vec<&[u8]> {
    let mut first_jwks = Vec::new();
    for t in &seen.tokens {
        for (i, fetches) in seen.fetches.iter().enumerate() {
            assert!(
                fetches[..=t.round].iter().any(|f| f.kids.contains(&t.kid)),
                "server {i} did not publish {} before a token signed by it was issued (round {})",
                t.kid,
                t.round
            );
        }
        let earliest = seen.fetches[0].iter().find(|f| f.kids.contains(&t.kid)).unwrap();
        first_jwks.push(earliest.body.as_slice());
    }
    first_jwks
}

/// PyJWT verifies each token with the JWKS given for it.
fn assert_outside_verifier_accepts(tokens: &[&str], jwks: &[&[u8]]) {
    let dir = tempfile::tempdir().unwrap();
    let cases: Vec<Value> = tokens
        .iter()
        .zip(jwks)
        .map(|(token, jwks)| json!({"token": token, "jwks": serde_json::from_slice::<Value>(jwks).unwrap()}))
        .collect();
    let path = dir.path().join("cases.json");
    std::fs::write(&path, serde_json::to_vec(&cases).unwrap()).unwrap();
    let script = r#"
import json, sys, jwt
for case in json.load(open(sys.argv[1])):
    token, keys = case["token"], case["jwks"]["keys"]
    kid = jwt.get_unverified_header(token)["kid"]
    key = next(jwt.PyJWK(k).key for k in keys if k["kid"] == kid)
    claims = jwt.decode(token, key, algorithms=["RS256", "ES256"], audience=sys.argv[2],
                        issuer=sys.argv[2])
    print(claims["sub"])
"#;
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&path)
        .arg(ISSUER)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.lines().count(), tokens.len(), "{stdout}");
}

fn badge_keys(s: &TestServer, args: &[&str]) -> String {
    let out = std::process::Command::new(BIN)
        .arg("keys")
        .args(args)
        .env("KUBECONFIG", s.kubeconfig())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn keys_rotate_themselves_and_are_published_before_they_sign() {
    let s = TestServer::start_with(BIN, &ROTATION);
    s.kubectl_ok(&["create", "sa", "rot", "-n", "default"]);
    // The first key and two automatic successors.
    let seen = observe(&[&s], "rot", 3);
    let first_jwks = assert_published_before_use(&seen);
    let tokens: Vec<&str> = seen.tokens.iter().map(|t| t.token.as_str()).collect();
    assert_outside_verifier_accepts(&tokens, &first_jwks);

    // Signing keys in the order they took over.
    let mut signers: Vec<&str> = Vec::new();
    for t in &seen.tokens {
        if signers.last() != Some(&t.kid.as_str()) {
            assert!(!signers.contains(&t.kid.as_str()), "{} signed again", t.kid);
            signers.push(&t.kid);
        }
    }
    // Retired keys verify until every token they signed has expired (an hour and more
    // here); so every token issued in every phase still verifies.
    for t in &seen.tokens {
        assert!(
            crate::authenticated(&s, &t.token),
            "a token of {} was refused",
            t.kid
        );
    }
    let listed = s
        .request("GET", "/badge/v1/keys", None, &[], Admin)
        .unwrap()
        .json();
    assert_eq!(
        listed["rotation"],
        json!({"periodSeconds": 4, "publishLeadSeconds": 2})
    );
    let states: BTreeMap<&str, &str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kid"].as_str().unwrap(), k["state"].as_str().unwrap()))
        .collect();
    assert_eq!(states[signers[0]], "Retired");
    assert_eq!(states[signers[1]], "Retired");
    for k in listed["keys"].as_array().unwrap() {
        assert!(k["nextTransition"].is_string(), "{k}");
    }

    let text = badge_keys(&s, &["list"]);
    assert!(
        text.starts_with("automatic rotation every 4s, new keys published 2s before signing\n"),
        "{text}"
    );
    assert!(text.contains("NEXT TRANSITION"), "{text}");
    let first_line = text.lines().find(|l| l.starts_with(signers[0])).unwrap();
    assert!(first_line.contains("Retired"), "{first_line}");
    assert!(!first_line.trim_end().ends_with('-'), "{first_line}");

    // Revoking a retired key ends its tokens at once; the others' stay valid.
    badge_keys(&s, &["revoke", signers[0]]);
    for t in &seen.tokens {
        assert_eq!(
            crate::authenticated(&s, &t.token),
            t.kid != signers[0],
            "a token of {} after revoking {}",
            t.kid,
            signers[0]
        );
    }
    let jwks = fetch_jwks(&s);
    assert!(!jwks.kids.contains(signers[0]));
    assert!(jwks.kids.contains(signers[1]) && jwks.kids.contains(signers[2]));
}

fn etcd_rotation_args(etcd: &EtcdCluster) -> Vec<String> {
    let mut args: Vec<String> = ROTATION.iter().map(|a| a.to_string()).collect();
    args.extend([
        "--storage".into(),
        "etcd".into(),
        "--etcd-servers".into(),
        etcd.endpoints_flag(),
    ]);
    args
}

/// Whether this server's controllers hold the leader lease, by its last leadership line.
fn leads(server: &TestServer) -> bool {
    let log = server.log.lock().unwrap();
    log.iter()
        .rev()
        .find(|line| line.contains("leadership changed"))
        .is_some_and(|line| line.contains("leading=true"))
}

fn automatic_rotations(server: &TestServer) -> usize {
    let log = server.log.lock().unwrap();
    log.iter()
        .filter(|line| line.contains("rotation started (automatic)"))
        .count()
}

#[test]
fn servers_on_etcd_rotate_once_and_never_sign_with_a_key_the_others_lack() {
    let etcd = EtcdCluster::start(1);
    let args = etcd_rotation_args(&etcd);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let a = TestServer::start_with(BIN, &args);
    let b = TestServer::start_sharing_pki(BIN, &args, &a);
    let deadline = Instant::now() + DEADLINE;
    while !(leads(&a) || leads(&b)) {
        assert!(Instant::now() < deadline, "no server took the lease");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (leader, follower) = if leads(&a) { (&a, &b) } else { (&b, &a) };
    a.kubectl_ok(&["create", "sa", "rot", "-n", "default"]);
    let seen = observe(&[&a, &b], "rot", 3);
    // Tokens from either server carry keys both servers published beforehand.
    let first_jwks = assert_published_before_use(&seen);
    let tokens: Vec<&str> = seen.tokens.iter().map(|t| t.token.as_str()).collect();
    assert_outside_verifier_accepts(&tokens, &first_jwks);
    for t in &seen.tokens {
        assert!(crate::authenticated(&a, &t.token) && crate::authenticated(&b, &t.token));
    }
    // One rotation per due time, all by the lease holder: every key but the first was made
    // by one automatic rotation there.
    let listed = a
        .request("GET", "/badge/v1/keys", None, &[], Admin)
        .unwrap()
        .json();
    let keys = listed["keys"].as_array().unwrap().len();
    assert_eq!(automatic_rotations(follower), 0);
    assert!(leads(leader), "leadership moved during the test");
    assert!(automatic_rotations(leader) >= keys - 1);
    assert!(automatic_rotations(leader) <= keys);
}
