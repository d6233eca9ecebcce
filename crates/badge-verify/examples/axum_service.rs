//! An axum service that accepts only ServiceAccount tokens meant for it.
//!
//! ```text
//! BADGE_ISSUER=https://kubernetes.default.svc.cluster.local \
//! BADGE_DISCOVERY_URL=https://127.0.0.1:6443/.well-known/openid-configuration \
//! BADGE_CA_FILE=./badge-data/pki/ca.crt BADGE_FETCH_TOKEN="$(kubectl create token reader)" \
//! BADGE_AUDIENCE=payments cargo run -p badge-verify --example axum_service
//! curl -H "Authorization: Bearer $(kubectl create token checkout --audience payments)" \
//!     http://127.0.0.1:8080/whoami
//! ```

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::get;
use badge_verify::{Verifier, bearer_token};

/// The service: `/whoami` answers the caller's ServiceAccount, 401 for a refused token, 503
/// while the issuer's keys cannot be had.
pub(crate) fn router(verifier: Verifier) -> Router {
    Router::new().route("/whoami", get(whoami)).with_state(verifier)
}

async fn whoami(State(verifier): State<Verifier>, headers: HeaderMap) -> (StatusCode, String) {
    let Some(token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
    else {
        return (StatusCode::UNAUTHORIZED, "a bearer token is required\n".into());
    };
    match verifier.verify(token).await {
        Ok(identity) => (StatusCode::OK, format!("{}\n", identity.username())),
        // The reason is for the service's log; the caller learns only that it was refused.
        Err(error) if error.is_refusal() => {
            log_refusal(&error);
            (StatusCode::UNAUTHORIZED, "unauthorized\n".into())
        }
        Err(error) => {
            log_refusal(&error);
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "cannot verify tokens now\n".into(),
            )
        }
    }
}

fn log_refusal(error: &badge_verify::VerifyError) {
    eprintln!("refused a request: {error}");
}

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

#[allow(dead_code)]
#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut builder = Verifier::builder(env("BADGE_ISSUER")?).audience(env("BADGE_AUDIENCE")?);
    if let Ok(url) = env("BADGE_DISCOVERY_URL") {
        builder = builder.discovery_url(url);
    }
    if let Ok(path) = env("BADGE_CA_FILE") {
        builder = builder.ca_pem(std::fs::read(path)?);
    }
    if let Ok(token) = env("BADGE_FETCH_TOKEN") {
        builder = builder.fetch_bearer_token(token);
    }
    let verifier = builder.build()?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    axum::serve(listener, router(verifier)).await?;
    Ok(())
}
