#![allow(clippy::unwrap_used)]

use super::*;

/// A pod with one container and one init container, in namespace `ns`.
fn pod(spec: Value) -> Value {
    let mut spec_object = json!({
        "containers": [{"name": "c", "image": "i"}],
        "initContainers": [{"name": "init", "image": "i"}],
    });
    for (key, value) in spec.as_object().cloned().unwrap_or_default() {
        spec_object[key] = value;
    }
    json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": spec_object})
}

fn sa(name: &str, extra: Value) -> Value {
    let mut sa = json!({"metadata": {"name": name, "namespace": "ns"}});
    for (key, value) in extra.as_object().cloned().unwrap_or_default() {
        sa[key] = value;
    }
    sa
}

fn enforcing(secrets: &[&str], pull: &[&str]) -> Value {
    let names = |list: &[&str]| list.iter().map(|n| json!({"name": n})).collect::<Vec<_>>();
    sa(
        "sa",
        json!({
            "metadata": {"name": "sa", "namespace": "ns",
                "annotations": {ENFORCE_MOUNTABLE_SECRETS_ANNOTATION: "true"}},
            "secrets": names(secrets),
            "imagePullSecrets": names(pull),
        }),
    )
}

fn admit(pod: &mut Value, sa: &Value) -> Result<Vec<String>, Status> {
    admit_pod(pod, Some(sa), "ns", "abcde")
}

fn has_token_volume(pod: &Value) -> bool {
    array_at(pod, &["spec", "volumes"])
        .iter()
        .any(|v| v["name"] == "kube-api-access-abcde")
}

const MOUNT: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

#[test]
fn automount_matrix() {
    // (pod setting, ServiceAccount setting, mounted)
    let cases = [
        (None, None, true),
        (None, Some(true), true),
        (None, Some(false), false),
        (Some(true), None, true),
        (Some(true), Some(true), true),
        (Some(true), Some(false), true),
        (Some(false), None, false),
        (Some(false), Some(true), false),
        (Some(false), Some(false), false),
    ];
    for (pod_setting, sa_setting, want) in cases {
        let mut p = pod(json!({}));
        if let Some(value) = pod_setting {
            p["spec"]["automountServiceAccountToken"] = json!(value);
        }
        let mut account = sa("default", json!({}));
        if let Some(value) = sa_setting {
            account["automountServiceAccountToken"] = json!(value);
        }
        admit(&mut p, &account).unwrap();
        let context = format!("pod {pod_setting:?} sa {sa_setting:?}");
        assert_eq!(has_token_volume(&p), want, "{context}");
        assert_eq!(
            p["spec"]["containers"][0].get("volumeMounts").is_some(),
            want,
            "{context}"
        );
        assert_eq!(
            p["spec"]["initContainers"][0].get("volumeMounts").is_some(),
            want,
            "{context}"
        );
    }
}

#[test]
fn injected_volume_and_mounts_are_exactly_upstreams() {
    let mut p = pod(json!({"volumes": [{"name": "data", "emptyDir": {}}]}));
    let warnings = admit(&mut p, &sa("default", json!({}))).unwrap();
    assert!(warnings.is_empty());
    assert_eq!(
        p["spec"]["volumes"],
        json!([
            {"name": "data", "emptyDir": {}},
            {"name": "kube-api-access-abcde", "projected": {
                "defaultMode": 420,
                "sources": [
                    {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                    {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                    {"downwardAPI": {"items": [
                        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                    ]}},
                ],
            }},
        ])
    );
    let mount = json!([{"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT}]);
    assert_eq!(p["spec"]["containers"][0]["volumeMounts"], mount);
    assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], mount);
}

#[test]
fn mounts_are_appended_after_existing_ones_in_every_container() {
    let mut p = pod(json!({
        "containers": [
            {"name": "a", "volumeMounts": [{"name": "data", "mountPath": "/data"}]},
            {"name": "b"},
        ],
        "initContainers": [{"name": "i1"}, {"name": "i2", "volumeMounts": null}],
        "volumes": [{"name": "data", "emptyDir": {}}],
    }));
    admit(&mut p, &sa("default", json!({}))).unwrap();
    let token = json!({"name": "kube-api-access-abcde", "readOnly": true, "mountPath": MOUNT});
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "data", "mountPath": "/data"}, token])
    );
    assert_eq!(p["spec"]["containers"][1]["volumeMounts"], json!([token]));
    assert_eq!(p["spec"]["initContainers"][0]["volumeMounts"], json!([token]));
    assert_eq!(p["spec"]["initContainers"][1]["volumeMounts"], json!([token]));
}

#[test]
fn containers_already_mounting_the_path_are_skipped() {
    let own = json!([{"name": "mine", "mountPath": MOUNT}]);
    // One container has its own mount there, the other gets the token: the volume is added.
    let mut p = pod(json!({
        "containers": [{"name": "a", "volumeMounts": own.clone()}, {"name": "b"}],
        "initContainers": [],
        "volumes": [{"name": "mine", "secret": {"secretName": "s"}}],
    }));
    admit(&mut p, &sa("default", json!({}))).unwrap();
    assert_eq!(p["spec"]["containers"][0]["volumeMounts"], own);
    assert_eq!(
        p["spec"]["containers"][1]["volumeMounts"][0]["name"],
        "kube-api-access-abcde"
    );
    assert!(has_token_volume(&p));

    // Every container has its own: nothing is mounted and no volume is added.
    let mut p = pod(json!({
        "containers": [{"name": "a", "volumeMounts": own.clone()}],
        "initContainers": [{"name": "i", "volumeMounts": own.clone()}],
        "volumes": [{"name": "mine", "secret": {"secretName": "s"}}],
    }));
    let before = p.clone();
    admit(&mut p, &sa("default", json!({}))).unwrap();
    assert_eq!(p["spec"]["volumes"], before["spec"]["volumes"]);
    assert_eq!(p["spec"]["containers"], before["spec"]["containers"]);
    assert_eq!(p["spec"]["initContainers"], before["spec"]["initContainers"]);
}

#[test]
fn an_existing_kube_api_access_volume_is_reused() {
    let existing = json!({"name": "kube-api-access-zzzzz", "projected": {"sources": []}});
    let mut p = pod(json!({"volumes": [existing.clone()]}));
    admit(&mut p, &sa("default", json!({}))).unwrap();
    assert_eq!(p["spec"]["volumes"], json!([existing]));
    assert_eq!(
        p["spec"]["containers"][0]["volumeMounts"],
        json!([{"name": "kube-api-access-zzzzz", "readOnly": true, "mountPath": MOUNT}])
    );
}

#[test]
fn init_containers_are_mounted_but_ephemeral_containers_are_not() {
    let mut p = pod(json!({
        "initContainers": [{"name": "i1"}, {"name": "i2"}],
        "ephemeralContainers": [{"name": "e"}],
    }));
    admit(&mut p, &sa("default", json!({}))).unwrap();
    for i in 0..2 {
        assert_eq!(
            p["spec"]["initContainers"][i]["volumeMounts"][0]["mountPath"],
            MOUNT
        );
    }
    assert_eq!(p["spec"]["ephemeralContainers"][0], json!({"name": "e"}));
}

#[test]
fn a_pod_without_containers_gets_no_volume() {
    let mut p = json!({"metadata": {"name": "p"}, "spec": {}});
    admit(&mut p, &sa("default", json!({}))).unwrap();
    assert!(p["spec"].get("volumes").is_none());
}

#[test]
fn image_pull_secrets_are_copied_only_when_the_pod_has_none() {
    let account = sa(
        "default",
        json!({"imagePullSecrets": [{"name": "reg1"}, {"name": "reg2", "extra": "dropped"}]}),
    );
    let copied = json!([{"name": "reg1"}, {"name": "reg2"}]);

    let mut p = pod(json!({}));
    admit(&mut p, &account).unwrap();
    assert_eq!(p["spec"]["imagePullSecrets"], copied);

    let mut empty = pod(json!({"imagePullSecrets": []}));
    admit(&mut empty, &account).unwrap();
    assert_eq!(empty["spec"]["imagePullSecrets"], copied);

    let mut own = pod(json!({"imagePullSecrets": [{"name": "mine"}]}));
    admit(&mut own, &account).unwrap();
    assert_eq!(own["spec"]["imagePullSecrets"], json!([{"name": "mine"}]));

    // Copied even when the token is not mounted.
    let mut off = pod(json!({"automountServiceAccountToken": false}));
    admit(&mut off, &account).unwrap();
    assert_eq!(off["spec"]["imagePullSecrets"], copied);

    // Nothing to copy: the field stays absent.
    let mut none = pod(json!({}));
    admit(&mut none, &sa("default", json!({}))).unwrap();
    assert!(none["spec"].get("imagePullSecrets").is_none());
}

#[test]
fn a_missing_service_account_is_forbidden() {
    let mut p = pod(json!({"serviceAccountName": "ghost"}));
    let before = p.clone();
    let err = admit_pod(&mut p, None, "ns", "abcde").unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(err.reason, "Forbidden");
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: error looking up service account ns/ghost: serviceaccount \"ghost\" not found"
    );
    let details = err.details.unwrap();
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("p", "pods"));
    assert_eq!(p, before);

    // The defaulted name is the one looked up.
    let mut p = pod(json!({}));
    let err = admit_pod(&mut p, None, "ns", "abcde").unwrap_err();
    assert!(
        err.message
            .ends_with("error looking up service account ns/default: serviceaccount \"default\" not found"),
        "{}",
        err.message
    );
}

#[test]
fn refusals_name_the_pod_as_upstream_does() {
    // Before its name is generated a pod is named by its generateName, else "Unknown".
    let mut generated = json!({"metadata": {"generateName": "web-"}, "spec": {}});
    let err = admit_pod(&mut generated, None, "ns", "abcde").unwrap_err();
    assert!(
        err.message.starts_with("pods \"web-\" is forbidden: "),
        "{}",
        err.message
    );
    let mut anonymous = json!({"spec": {}});
    let err = admit_pod(&mut anonymous, None, "ns", "abcde").unwrap_err();
    assert!(
        err.message.starts_with("pods \"Unknown\" is forbidden: "),
        "{}",
        err.message
    );
}

#[test]
fn the_service_account_name_is_defaulted_and_mirrored_into_the_alias() {
    assert_eq!(service_account_name(&pod(json!({}))), "default");
    assert_eq!(
        service_account_name(&pod(json!({"serviceAccountName": ""}))),
        "default"
    );
    assert_eq!(
        service_account_name(&pod(json!({"serviceAccountName": "x"}))),
        "x"
    );
    // The deprecated alias counts when the name is empty; the name wins when both are set.
    assert_eq!(
        service_account_name(&pod(json!({"serviceAccount": "old"}))),
        "old"
    );
    assert_eq!(
        service_account_name(&pod(
            json!({"serviceAccountName": "new", "serviceAccount": "old"})
        )),
        "new"
    );
    assert_eq!(service_account_name(&json!({})), "default");

    let mut p = pod(json!({}));
    admit(&mut p, &sa("default", json!({}))).unwrap();
    assert_eq!(p["spec"]["serviceAccountName"], "default");
    assert_eq!(p["spec"]["serviceAccount"], "default");

    let mut p = pod(json!({"serviceAccount": "old"}));
    admit(&mut p, &sa("old", json!({}))).unwrap();
    assert_eq!(p["spec"]["serviceAccountName"], "old");
    assert_eq!(p["spec"]["serviceAccount"], "old");
}

#[test]
fn mirror_pods_are_left_alone_or_refused() {
    let mirror = |spec: Value| {
        let mut p = pod(spec);
        p["metadata"]["annotations"] = json!({MIRROR_POD_ANNOTATION: ""});
        p
    };
    let mut clean = mirror(json!({}));
    let before = clean.clone();
    assert_eq!(
        admit_pod(&mut clean, None, "ns", "abcde").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(clean, before);

    let refused = [
        (
            json!({"serviceAccountName": "sa"}),
            "a mirror pod may not reference service accounts",
        ),
        (
            json!({"serviceAccount": "sa"}),
            "a mirror pod may not reference service accounts",
        ),
        (
            json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"volumes": [{"name": "v", "projected": {"sources": [{"secret": {"name": "s"}}]}}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"volumes": [{"name": "v", "csi": {"driver": "d", "nodePublishSecretRef": {"name": "s"}}}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"imagePullSecrets": [{"name": "s"}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "s"}}]}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"ephemeralContainers": [{"name": "e", "env": [
                {"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]}),
            "a mirror pod may not reference secrets",
        ),
        (
            json!({"volumes": [{"name": "v", "projected": {"sources": [
                {"serviceAccountToken": {"path": "token"}}]}}]}),
            "a mirror pod may not use ServiceAccountToken volume projections",
        ),
    ];
    for (spec, reason) in refused {
        let mut p = mirror(spec.clone());
        let err = admit_pod(&mut p, None, "ns", "abcde").unwrap_err();
        assert_eq!(err.code, 403, "{spec}");
        assert_eq!(
            err.message,
            format!("pods \"p\" is forbidden: {reason}"),
            "{spec}"
        );
    }
}

/// Each pod spec references the secret `s` in one way, with the exact refusal upstream gives
/// (or, for projected secrets and ephemeral containers on create, the one this module gives).
fn secret_references() -> Vec<(Value, &'static str)> {
    let env = |name: &str| json!([{"name": name, "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}]);
    let env_from = |name: &str| json!([{"name": name, "envFrom": [{"secretRef": {"name": "s"}}]}]);
    vec![
        (
            json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]}),
            "volume with secret.secretName=\"s\" is not allowed because service account sa does not \
             reference that secret",
        ),
        (
            json!({"volumes": [{"name": "v", "projected": {"sources": [
                {"configMap": {"name": "cm"}}, {"secret": {"name": "s"}}]}}]}),
            "projected volume with secret.name=\"s\" is not allowed because service account sa does not \
             reference that secret",
        ),
        (
            json!({"containers": env("c")}),
            "container c with envVar E referencing secret.secretName=\"s\" is not allowed because service \
             account sa does not reference that secret",
        ),
        (
            json!({"initContainers": env("i")}),
            "init container i with envVar E referencing secret.secretName=\"s\" is not allowed because \
             service account sa does not reference that secret",
        ),
        (
            json!({"ephemeralContainers": env("e")}),
            "ephemeral container e with envVar E referencing secret.secretName=\"s\" is not allowed because \
             service account sa does not reference that secret",
        ),
        (
            json!({"containers": env_from("c")}),
            "container c with envFrom referencing secret.secretName=\"s\" is not allowed because service \
             account sa does not reference that secret",
        ),
        (
            json!({"initContainers": env_from("i")}),
            "init container i with envFrom referencing secret.secretName=\"s\" is not allowed because \
             service account sa does not reference that secret",
        ),
        (
            json!({"ephemeralContainers": env_from("e")}),
            "ephemeral container e with envFrom referencing secret.secretName=\"s\" is not allowed because \
             service account sa does not reference that secret",
        ),
    ]
}

#[test]
fn mountable_secrets_refuse_unlisted_and_allow_listed_secrets() {
    for (spec, reason) in secret_references() {
        let mut p = pod(spec.clone());
        let before = p.clone();
        let err = admit(&mut p, &enforcing(&["other"], &[])).unwrap_err();
        assert_eq!(err.code, 403, "{spec}");
        assert_eq!(err.reason, "Forbidden", "{spec}");
        assert_eq!(
            err.message,
            format!("pods \"p\" is forbidden: {reason}"),
            "{spec}"
        );
        assert_eq!(p, before, "a refused pod is left untouched: {spec}");

        let mut p = pod(spec.clone());
        let warnings = admit(&mut p, &enforcing(&["other", "s"], &[])).unwrap();
        assert!(warnings.is_empty(), "{spec}");
        assert!(has_token_volume(&p), "{spec}");
    }
}

#[test]
fn mountable_secrets_cover_image_pull_secrets() {
    let mut p = pod(json!({"imagePullSecrets": [{"name": "ok"}, {"name": "reg"}]}));
    let err = admit(&mut p, &enforcing(&["reg"], &["ok"])).unwrap_err();
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: imagePullSecrets[1].name=\"reg\" is not allowed because service account \
         sa does not reference that imagePullSecret"
    );
    let mut p = pod(json!({"imagePullSecrets": [{"name": "ok"}, {"name": "reg"}]}));
    admit(&mut p, &enforcing(&[], &["ok", "reg"])).unwrap();
    // Pull secrets copied from the ServiceAccount are its own, so they pass.
    let mut p = pod(json!({}));
    admit(&mut p, &enforcing(&[], &["reg"])).unwrap();
    assert_eq!(p["spec"]["imagePullSecrets"], json!([{"name": "reg"}]));
}

#[test]
fn mountable_secrets_apply_only_when_the_annotation_parses_as_true() {
    let spec = json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}]});
    for (value, enforced) in [
        ("true", true),
        ("True", true),
        ("TRUE", true),
        ("t", true),
        ("1", true),
        ("false", false),
        ("0", false),
        ("yes", false),
        ("tRuE", false),
        ("", false),
    ] {
        let mut account = enforcing(&[], &[]);
        account["metadata"]["annotations"][ENFORCE_MOUNTABLE_SECRETS_ANNOTATION] = json!(value);
        let mut p = pod(spec.clone());
        assert_eq!(admit(&mut p, &account).is_err(), enforced, "{value:?}");
    }
    let mut p = pod(spec);
    admit(&mut p, &sa("sa", json!({}))).unwrap();
}

#[test]
fn the_first_unlisted_reference_is_reported_in_upstreams_order() {
    let mut p = pod(json!({
        "containers": [{"name": "c", "envFrom": [{"secretRef": {"name": "b"}}],
            "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "a", "key": "k"}}}]}],
        "volumes": [{"name": "v", "secret": {"secretName": "v"}}],
    }));
    let err = admit(&mut p, &enforcing(&[], &[])).unwrap_err();
    assert!(err.message.contains("secret.secretName=\"v\""), "{}", err.message);
    p["spec"]["volumes"] = json!([]);
    let err = admit(&mut p, &enforcing(&[], &[])).unwrap_err();
    assert!(err.message.contains("with envVar E"), "{}", err.message);
}

#[test]
fn ephemeral_container_updates_obey_the_policy() {
    let with_ephemeral = |container: Value| {
        json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"serviceAccountName": "sa", "containers": [{"name": "c"}],
                "ephemeralContainers": [container]}})
    };
    let env = with_ephemeral(
        json!({"name": "e", "env": [{"name": "E", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}),
    );
    let env_from = with_ephemeral(json!({"name": "e", "envFrom": [{"secretRef": {"name": "s"}}]}));
    let err = admit_ephemeral_containers(&env, Some(&enforcing(&[], &[]))).unwrap_err();
    assert_eq!(err.code, 403);
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: ephemeral container e with envVar E referencing secret.secretName=\"s\" \
         is not allowed because service account sa does not reference that secret"
    );
    let err = admit_ephemeral_containers(&env_from, Some(&enforcing(&[], &[]))).unwrap_err();
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: ephemeral container e with envFrom referencing secret.secretName=\"s\" \
         is not allowed because service account sa does not reference that secret"
    );
    for pod in [&env, &env_from] {
        admit_ephemeral_containers(pod, Some(&enforcing(&["s"], &[]))).unwrap();
        admit_ephemeral_containers(pod, Some(&sa("sa", json!({})))).unwrap();
    }

    let err = admit_ephemeral_containers(&env, None).unwrap_err();
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: error looking up service account ns/sa: serviceaccount \"sa\" not found"
    );
    let mut unnamed = env.clone();
    unnamed["spec"]
        .as_object_mut()
        .unwrap()
        .remove("serviceAccountName");
    let err = admit_ephemeral_containers(&unnamed, Some(&enforcing(&["s"], &[]))).unwrap_err();
    assert_eq!(
        err.message,
        "pods \"p\" is forbidden: no service account specified for pod ns/p"
    );
}

#[test]
fn the_deprecation_warning_belongs_to_service_account_writes() {
    // Upstream's pod admission warns about nothing, even with the annotation in effect.
    let mut p = pod(json!({}));
    assert!(admit(&mut p, &enforcing(&[], &[])).unwrap().is_empty());

    let warning = "metadata.annotations[kubernetes.io/enforce-mountable-secrets]: deprecated in v1.32+; \
                   prefer separate namespaces to isolate access to mounted secrets";
    let with = enforcing(&[], &[]);
    let mut with_false = with.clone();
    with_false["metadata"]["annotations"][ENFORCE_MOUNTABLE_SECRETS_ANNOTATION] = json!("false");
    let without = sa("sa", json!({}));
    assert_eq!(enforce_mountable_secrets_warnings(&with, None), vec![warning]);
    // Any value of the annotation counts.
    assert_eq!(
        enforce_mountable_secrets_warnings(&with_false, None),
        vec![warning]
    );
    assert!(enforce_mountable_secrets_warnings(&without, None).is_empty());
    assert_eq!(
        enforce_mountable_secrets_warnings(&with, Some(&without)),
        vec![warning]
    );
    // Only newly setting it warns.
    assert!(enforce_mountable_secrets_warnings(&with, Some(&with_false)).is_empty());
    assert!(enforce_mountable_secrets_warnings(&without, Some(&with)).is_empty());
}
