//! A tonic gRPC service (the standard health service) behind a layer that accepts only
//! ServiceAccount tokens meant for it; the caller's identity is put in the request's
//! extensions for handlers. Refused calls end with `UNAUTHENTICATED`.
//!
//! Configured by the same environment variables as the axum example; serves on
//! 127.0.0.1:50051.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use badge_verify::{ServiceAccountIdentity, Verifier, bearer_token};
use tonic::body::Body;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

/// A tower layer that verifies the `authorization` metadata of every call.
#[derive(Clone)]
pub(crate) struct RequireServiceAccount<S> {
    inner: S,
    verifier: Verifier,
}

impl<S> tower::Service<http::Request<Body>> for RequireServiceAccount<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: http::Request<Body>) -> Self::Future {
        // The clone that was polled ready is the one that serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let verifier = self.verifier.clone();
        Box::pin(async move {
            let token = request
                .headers()
                .get(http::header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(bearer_token)
                .map(str::to_string);
            let verdict = match token {
                Some(token) => verifier.verify(&token).await,
                None => Err(badge_verify::VerifyError::Malformed("no bearer token")),
            };
            match verdict {
                Ok(identity) => {
                    request
                        .extensions_mut()
                        .insert::<ServiceAccountIdentity>(identity);
                    inner.call(request).await
                }
                Err(error) if error.is_refusal() => {
                    Ok(tonic::Status::unauthenticated("unauthorized").into_http())
                }
                Err(_) => Ok(tonic::Status::unavailable("cannot verify tokens now").into_http()),
            }
        })
    }
}

/// Serves the health service on `listener`, every call checked by `verifier`.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    verifier: Verifier,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    Server::builder()
        .layer(tower::layer::layer_fn(move |inner| RequireServiceAccount {
            inner,
            verifier: verifier.clone(),
        }))
        .add_service(health)
        .serve_with_incoming(TcpIncoming::from(listener))
        .await
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
    serve(listener, builder.build()?).await?;
    Ok(())
}
