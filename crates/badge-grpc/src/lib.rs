//! gRPC over a unix socket, as kube-apiserver speaks to its plugins (the KMS v2 plugin of
//! `staging/src/k8s.io/kms`, the ExternalJWTSigner of `staging/src/k8s.io/externaljwt`).
//! Messages are declared by hand beside each service; this crate holds what every such
//! service does the same way: an owner-only socket, the HTTP/2 accept loop and the unary
//! method call.

#![warn(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::path::Path;

use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::RngCore;
use tokio::net::UnixListener;
use tonic::server::Grpc;
use tonic_prost::ProstCodec;

/// A request as the HTTP/2 connection delivers it.
pub type HttpRequest = http::Request<hyper::body::Incoming>;
/// A gRPC answer.
pub type HttpResponse = http::Response<tonic::body::Body>;

/// Binds the socket at `path` (a stale one is replaced), usable by its owner only. It is
/// bound in a private directory named after `label`, made 0600 and then moved into place,
/// so it is never reachable with looser permissions.
pub fn bind(path: &Path, label: &str) -> std::io::Result<UnixListener> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(
        ".{label}-{}-{:x}",
        std::process::id(),
        rand::rng().next_u64()
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("socket");
    let bound = UnixListener::bind(&staged).and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&staged, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_file(&staged);
    let _ = std::fs::remove_dir(&private);
    bound
}

/// Serves HTTP/2 connections on `listener` with `handle` until `shutdown` completes; `what`
/// names the service in logs.
pub async fn serve<H, F>(
    listener: UnixListener,
    handle: H,
    shutdown: impl Future<Output = ()>,
    what: &'static str,
) -> std::io::Result<()>
where
    H: Fn(HttpRequest) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = HttpResponse> + Send + 'static,
{
    tokio::pin!(shutdown);
    loop {
        let (stream, _) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => accepted?,
        };
        let handle = handle.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let answer = handle(request);
                async move { Ok::<_, Infallible>(answer.await) }
            });
            if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(error = %e, "{what} connection ended");
            }
        });
    }
}

/// Answers one unary call: decodes `Req`, runs `answer`, encodes its reply or status.
pub async fn unary<Req, Resp, A, Fut>(request: HttpRequest, answer: A) -> HttpResponse
where
    Req: prost::Message + Default + Send + 'static,
    Resp: prost::Message + Send + 'static,
    A: FnOnce(Req) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Result<Resp, tonic::Status>> + Send + 'static,
{
    let service = tower::service_fn(move |r: tonic::Request<Req>| {
        let answer = answer.clone();
        async move { answer(r.into_inner()).await.map(tonic::Response::new) }
    });
    Grpc::new(ProstCodec::<Resp, Req>::default())
        .unary(service, request)
        .await
}

/// The answer to a method the service does not have.
pub fn unimplemented(path: &str) -> HttpResponse {
    tonic::Status::unimplemented(format!("unknown method {path}")).into_http()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_socket_is_its_owners_only_and_replaces_a_stale_one() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("plugin.sock");
        std::fs::write(&path, b"stale").unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        let _listener = bind(&path, "test").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing of the private directory is left behind.
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1);
    }
}
