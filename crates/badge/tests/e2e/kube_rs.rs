//! The seed flows through kube-rs, the client Rust services talk to badge with: a
//! ServiceAccount, a TokenRequest with an audience, its TokenReview, RBAC-limited access
//! with the ServiceAccount's own client, and a watch.

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec, TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{Api, ListParams, ObjectMeta, PostParams, WatchEvent, WatchParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};

use crate::server;

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

/// The HTTP status of a kube-rs error, if the server answered one.
fn status_code(error: &kube::Error) -> Option<u16> {
    match error {
        kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

#[test]
fn seed_flows_with_kube_rs() {
    let s = server();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let kubeconfig = Kubeconfig::read_from(s.kubeconfig()).unwrap();
        let admin_config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .unwrap();
        let admin = kube::Client::try_from(admin_config.clone()).unwrap();
        let pp = PostParams::default();

        // A ServiceAccount.
        let accounts: Api<ServiceAccount> = Api::namespaced(admin.clone(), "default");
        let created = accounts
            .create(
                &pp,
                &ServiceAccount {
                    metadata: meta("robot"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let sa_uid = created.metadata.uid.unwrap();

        // A TokenRequest with an audience, then its TokenReview.
        let request = TokenRequest {
            spec: TokenRequestSpec {
                audiences: vec!["vault".to_string()],
                expiration_seconds: Some(3600),
                ..Default::default()
            },
            ..Default::default()
        };
        let issued = accounts
            .create_token_request("robot", &pp, &request)
            .await
            .unwrap();
        let vault_token = issued.status.unwrap().token;
        let reviews: Api<TokenReview> = Api::all(admin.clone());
        let review = |token: String, audiences: Vec<String>| TokenReview {
            spec: TokenReviewSpec {
                token: Some(token),
                audiences: Some(audiences),
            },
            ..Default::default()
        };
        let reviewed = reviews
            .create(&pp, &review(vault_token.clone(), vec!["vault".to_string()]))
            .await
            .unwrap()
            .status
            .unwrap();
        assert_eq!(reviewed.authenticated, Some(true));
        assert_eq!(reviewed.audiences, Some(vec!["vault".to_string()]));
        let user = reviewed.user.unwrap();
        assert_eq!(
            user.username.as_deref(),
            Some("system:serviceaccount:default:robot")
        );
        assert_eq!(user.uid.as_deref(), Some(sa_uid.as_str()));
        let wrong_audience = reviews
            .create(&pp, &review(vault_token, vec!["s3".to_string()]))
            .await
            .unwrap()
            .status
            .unwrap();
        // `authenticated: false` is omitted, as Go's omitempty leaves it.
        assert_ne!(wrong_audience.authenticated, Some(true));

        // RBAC: the ServiceAccount may read ConfigMaps, and nothing else.
        let roles: Api<Role> = Api::namespaced(admin.clone(), "default");
        roles
            .create(
                &pp,
                &Role {
                    metadata: meta("cm-reader"),
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["configmaps".to_string()]),
                        verbs: vec!["get".into(), "list".into(), "watch".into()],
                        ..Default::default()
                    }]),
                },
            )
            .await
            .unwrap();
        let bindings: Api<RoleBinding> = Api::namespaced(admin.clone(), "default");
        bindings
            .create(
                &pp,
                &RoleBinding {
                    metadata: meta("robot-reads-cms"),
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".into(),
                        kind: "Role".into(),
                        name: "cm-reader".into(),
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".into(),
                        name: "robot".into(),
                        namespace: Some("default".into()),
                        ..Default::default()
                    }]),
                },
            )
            .await
            .unwrap();
        let api_token = accounts
            .create_token_request("robot", &pp, &TokenRequest::default())
            .await
            .unwrap()
            .status
            .unwrap()
            .token;
        let mut robot_config = admin_config.clone();
        robot_config.auth_info = AuthInfo {
            token: Some(api_token.into()),
            ..Default::default()
        };
        let robot = kube::Client::try_from(robot_config).unwrap();
        let robot_cms: Api<ConfigMap> = Api::namespaced(robot.clone(), "default");
        robot_cms.list(&ListParams::default()).await.unwrap();
        let robot_secrets: Api<Secret> = Api::namespaced(robot.clone(), "default");
        let denied = robot_secrets.list(&ListParams::default()).await.unwrap_err();
        assert_eq!(status_code(&denied), Some(403), "{denied}");

        // A watch, as the ServiceAccount, receives the ConfigMap the admin creates.
        let mut events = robot_cms
            .watch(&WatchParams::default().timeout(60), "0")
            .await
            .unwrap()
            .boxed();
        let admin_cms: Api<ConfigMap> = Api::namespaced(admin.clone(), "default");
        admin_cms
            .create(
                &pp,
                &ConfigMap {
                    metadata: meta("watched"),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let added = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(event) = events.try_next().await.unwrap() {
                if let WatchEvent::Added(cm) = event
                    && cm.metadata.name.as_deref() == Some("watched")
                {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap();
        assert!(added, "the watch ended without the ConfigMap");
    });
}
