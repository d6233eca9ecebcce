//! The second mode: ask the API server (`POST /apis/authentication.k8s.io/v1/tokenreviews`).
//! The reviewer's own credential needs `create` on `tokenreviews` (the
//! `system:auth-delegator` ClusterRole grants it).

use std::time::Duration;

use serde_json::{Value, json};

use crate::{NodeRef, ObjectRef, ServiceAccountIdentity, VerifyError, http};

const REVIEW_PATH: &str = "/apis/authentication.k8s.io/v1/tokenreviews";
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);

/// Checks tokens with TokenReview against one API server.
#[derive(Clone, Debug)]
pub struct TokenReviewer {
    url: String,
    audiences: Vec<String>,
    client: http::HttpsClient,
}

impl TokenReviewer {
    /// A reviewer for `server` (`https://host:port`), trusting `ca_pem`, authenticating with
    /// `credential` (a bearer token), asking for tokens that carry one of `audiences`
    /// (required: an empty list would accept tokens meant for the API server itself).
    pub fn new(
        server: &str,
        ca_pem: &[u8],
        credential: String,
        audiences: Vec<String>,
    ) -> Result<Self, VerifyError> {
        if audiences.iter().all(String::is_empty) {
            return Err(VerifyError::Config("at least one audience is required".into()));
        }
        let client = http::HttpsClient::new(Some(ca_pem), Some(credential), REVIEW_TIMEOUT)
            .map_err(VerifyError::Config)?;
        Ok(Self {
            url: format!("{}{REVIEW_PATH}", server.trim_end_matches('/')),
            audiences,
            client,
        })
    }

    /// Reviews `token`.
    pub async fn verify(&self, token: &str) -> Result<ServiceAccountIdentity, VerifyError> {
        let body = json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token, "audiences": self.audiences},
        });
        let response = self
            .client
            .post_json(&self.url, body.to_string().into_bytes())
            .await
            .map_err(VerifyError::Review)?;
        let review: Value = serde_json::from_slice(&response.body).unwrap_or(Value::Null);
        if response.status != 201 && response.status != 200 {
            let message = review["message"].as_str().unwrap_or("no message");
            return Err(VerifyError::Review(format!(
                "HTTP {}: {message}",
                response.status
            )));
        }
        identity_from_status(&review["status"], &self.audiences)
    }
}

fn identity_from_status(status: &Value, audiences: &[String]) -> Result<ServiceAccountIdentity, VerifyError> {
    if status["authenticated"] != true {
        return Err(VerifyError::NotAuthenticated(
            status["error"]
                .as_str()
                .filter(|e| !e.is_empty())
                .map(str::to_string),
        ));
    }
    // The server echoes the audiences the token was accepted for; a server that ignores
    // spec.audiences (very old ones) answers none, and is not trusted with them.
    let accepted: Vec<String> = status["audiences"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|a| audiences.iter().any(|want| want == a))
        .map(str::to_string)
        .collect();
    if accepted.is_empty() {
        return Err(VerifyError::NotAuthenticated(Some(
            "the token is not for this audience".into(),
        )));
    }
    let user = &status["user"];
    let username = user["username"].as_str().unwrap_or_default();
    let (namespace, name) =
        badge_token::claims::split_username(username).ok_or(VerifyError::NotServiceAccount)?;
    let extra = |key: &str| {
        user["extra"][key]
            .as_array()
            .and_then(|v| v.first())
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let pod = match (
        extra(badge_token::claims::POD_NAME_KEY),
        extra(badge_token::claims::POD_UID_KEY),
    ) {
        (Some(name), Some(uid)) => Some(ObjectRef::new(name, uid)),
        _ => None,
    };
    let node = extra(badge_token::claims::NODE_NAME_KEY).map(|name| NodeRef {
        name,
        uid: extra(badge_token::claims::NODE_UID_KEY),
    });
    Ok(ServiceAccountIdentity {
        issuer: None,
        namespace: namespace.to_string(),
        name: name.to_string(),
        uid: user["uid"].as_str().unwrap_or_default().to_string(),
        pod,
        secret: None,
        node,
        audiences: accepted,
        expires_at: None,
        credential_id: extra(badge_token::claims::CREDENTIAL_ID_KEY),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_review_status_to_an_identity() {
        let status = json!({
            "authenticated": true,
            "audiences": ["svc"],
            "user": {
                "username": "system:serviceaccount:ns:app",
                "uid": "u-1",
                "groups": ["system:serviceaccounts"],
                "extra": {
                    "authentication.kubernetes.io/pod-name": ["p"],
                    "authentication.kubernetes.io/pod-uid": ["pu"],
                    "authentication.kubernetes.io/credential-id": ["JTI=j"],
                },
            },
        });
        let id = identity_from_status(&status, &["svc".to_string()]).unwrap();
        assert_eq!(
            (id.namespace.as_str(), id.name.as_str(), id.uid.as_str()),
            ("ns", "app", "u-1")
        );
        assert_eq!(id.pod, Some(ObjectRef::new("p", "pu")));
        assert_eq!(id.credential_id.as_deref(), Some("JTI=j"));
        let mut other_audience = status.clone();
        other_audience["audiences"] = json!([]);
        assert!(matches!(
            identity_from_status(&other_audience, &["svc".to_string()]),
            Err(VerifyError::NotAuthenticated(_))
        ));
        let mut not_sa = status;
        not_sa["user"]["username"] = json!("system:bootstrap:abcdef");
        assert!(matches!(
            identity_from_status(&not_sa, &["svc".to_string()]),
            Err(VerifyError::NotServiceAccount)
        ));
        let refused = json!({"authenticated": false, "error": "token has expired"});
        assert!(
            identity_from_status(&refused, &[])
                .unwrap_err()
                .to_string()
                .contains("expired")
        );
    }
}
