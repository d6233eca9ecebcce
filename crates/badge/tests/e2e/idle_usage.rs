//! `badge usage --unused-for`: ServiceAccounts and tokens unused for that long, against a
//! real server.

use badge_testkit::TestServer;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_badge");

fn usage(s: &TestServer, args: &[&str]) -> Value {
    let out = std::process::Command::new(BIN)
        .arg("usage")
        .arg("--data-dir")
        .arg(s.data_dir())
        .args(args)
        .args(["-o", "json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn listed(report: &Value) -> Vec<(String, String)> {
    report["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["kind"].as_str().unwrap().to_string(),
                i["name"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn badge_usage_lists_what_was_not_used_for_that_long() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    // Never used: counts from its creation, so it is idle for zero seconds already...
    let now = listed(&usage(&s, &["--unused-for", "0s", "-n", "shop"]));
    assert!(now.contains(&("ServiceAccount".into(), "web".into())), "{now:?}");
    assert!(
        now.contains(&("ServiceAccount".into(), "default".into())),
        "{now:?}"
    );
    // ...and not for thirty days.
    let month = usage(&s, &["--unused-for", "30d", "-n", "shop"]);
    assert!(listed(&month).is_empty(), "{month}");
    let table = std::process::Command::new(BIN)
        .args(["usage", "--unused-for", "0s", "-n", "shop", "--kubeconfig"])
        .arg(s.data_dir().join("admin.kubeconfig"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&table.stdout);
    assert!(text.starts_with("KIND") && text.contains("<never>"), "{text}");
}

fn serviceaccount(s: &TestServer, verb: &str, target: &str) -> String {
    let out = std::process::Command::new(BIN)
        .args(["serviceaccount", verb, target, "--data-dir"])
        .arg(s.data_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn a_disabled_service_account_is_enabled_again_with_one_command() {
    let s = TestServer::start(BIN);
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    let issued = s.kubectl_ok(&["create", "token", "web", "-n", "shop"]);
    let issued = issued.trim();
    assert!(crate::authenticated(&s, issued));
    assert_eq!(
        serviceaccount(&s, "disable", "shop/web"),
        "serviceaccount/web disabled\n"
    );
    // Tokens issued before it was disabled fail too, until it is enabled again.
    crate::eventually("the disabled account's token refused", || {
        !crate::authenticated(&s, issued)
    });
    let refused = s.kubectl_err(&["create", "token", "web", "-n", "shop"]);
    assert!(
        refused.contains("the ServiceAccount is disabled (identity.badge.dev/disabled=true)"),
        "{refused}"
    );
    assert_eq!(
        serviceaccount(&s, "enable", "shop/web"),
        "serviceaccount/web enabled\n"
    );
    crate::eventually("the enabled account's token accepted", || {
        crate::authenticated(&s, issued)
    });
    s.kubectl_ok(&["create", "token", "web", "-n", "shop"]);
    // The same through kubectl: set the label, then remove it.
    s.kubectl_ok(&[
        "label",
        "serviceaccount",
        "web",
        "-n",
        "shop",
        "identity.badge.dev/disabled=true",
    ]);
    s.kubectl_err(&["create", "token", "web", "-n", "shop"]);
    s.kubectl_ok(&[
        "label",
        "serviceaccount",
        "web",
        "-n",
        "shop",
        "identity.badge.dev/disabled-",
    ]);
    s.kubectl_ok(&["create", "token", "web", "-n", "shop"]);
}

fn labels(s: &TestServer, name: &str) -> Option<Value> {
    let out = s.kubectl(&["get", "serviceaccount", name, "-n", "shop", "-o", "json"]);
    out.status
        .success()
        .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap()["metadata"]["labels"].clone())
}

#[test]
fn the_idle_cleanup_marks_disables_then_deletes_an_unused_service_account() {
    let s = TestServer::start_with(BIN, &["--idle-serviceaccount-cleanup-period=5s"]);
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    crate::eventually("the idle mark", || {
        labels(&s, "web").is_some_and(|l| l.get("identity.badge.dev/idle-since").is_some())
    });
    assert!(s.logged("idle ServiceAccount marked idle"));
    crate::eventually("the ServiceAccount disabled", || {
        labels(&s, "web").is_some_and(|l| l["identity.badge.dev/disabled"] == "true")
    });
    let refused = s.kubectl_err(&["create", "token", "web", "-n", "shop"]);
    assert!(refused.contains("the ServiceAccount is disabled"), "{refused}");
    crate::eventually("the ServiceAccount deleted", || labels(&s, "web").is_none());
    assert!(s.logged("idle ServiceAccount deleted"));
    // Each step is in the audit log, as the controller's ServiceAccount's request.
    let mut steps = Vec::new();
    crate::eventually("the steps in the audit log", || {
        let log = std::fs::read_to_string(s.data_dir().join("audit.log")).unwrap_or_default();
        steps = log
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|e| {
                e["user"]["username"] == "system:serviceaccount:kube-system:idle-serviceaccount-cleaner"
                    && e["objectRef"]["namespace"] == "shop"
                    && e["objectRef"]["name"] == "web"
            })
            .collect::<Vec<_>>();
        steps.len() >= 3
    });
    let verbs: Vec<&str> = steps.iter().map(|e| e["verb"].as_str().unwrap()).collect();
    assert_eq!(verbs, ["update", "update", "delete"], "{steps:?}");
    for event in &steps {
        assert_eq!(event["stage"], "ResponseComplete", "{event}");
        assert_eq!(event["objectRef"]["resource"], "serviceaccounts", "{event}");
        assert_eq!(event["responseStatus"]["code"], 200, "{event}");
    }
}

#[test]
fn the_idle_cleanup_in_dry_run_changes_nothing() {
    let s = TestServer::start_with(
        BIN,
        &[
            "--idle-serviceaccount-cleanup-period=1s",
            "--idle-serviceaccount-cleanup-dry-run",
        ],
    );
    s.kubectl_ok(&["create", "namespace", "shop"]);
    s.kubectl_ok(&["create", "serviceaccount", "web", "-n", "shop"]);
    let before = s.kubectl_ok(&[
        "get",
        "serviceaccount",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    crate::eventually("the dry-run log line", || {
        s.logged("idle ServiceAccount would be marked idle")
    });
    let after = s.kubectl_ok(&[
        "get",
        "serviceaccount",
        "web",
        "-n",
        "shop",
        "-o",
        "jsonpath={.metadata.resourceVersion}",
    ]);
    assert_eq!(before, after);
    assert!(!s.logged("idle ServiceAccount marked idle"));
}
