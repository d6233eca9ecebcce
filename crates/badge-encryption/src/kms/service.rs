//! The connection to a KMS v2 plugin over its unix socket. The store's transformer is
//! synchronous while gRPC is not, so each provider keeps its own small runtime on a thread:
//! the status probe runs there, and reads that miss the DEK cache hand it a decrypt and
//! wait for the answer, bounded by the provider's timeout.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::Duration;

use http::uri::PathAndQuery;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tonic::transport::{Channel, Endpoint};

use super::proto;

const DEADLINE_EXCEEDED: &str = "rpc error: code = DeadlineExceeded desc = context deadline exceeded";

enum Command {
    Decrypt(proto::DecryptRequest, SyncSender<Result<Vec<u8>, String>>),
}

/// The handle the transformer holds; dropping it stops the thread, its probe and connection.
pub(crate) struct KmsService {
    commands: mpsc::UnboundedSender<Command>,
    timeout: Duration,
}

/// Calls to the plugin, on the service's runtime.
#[derive(Clone)]
pub(crate) struct Client {
    channel: Channel,
    timeout: Duration,
    primed: Arc<Mutex<Option<SyncSender<()>>>>,
}

impl KmsService {
    /// Starts the connection and `probe` beside it, and waits (bounded) for the probe's first
    /// round so a server starting with a healthy plugin can write at once.
    pub(crate) fn start<F, Fut>(name: &str, socket: PathBuf, timeout: Duration, probe: F) -> KmsService
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (commands, mut received) = mpsc::unbounded_channel::<Command>();
        let (primed, first_round) = sync_channel(1);
        let thread_name = format!("kms-{name}");
        let started = std::thread::Builder::new().name(thread_name).spawn(move || {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the kms plugin connection");
                    return;
                }
            };
            runtime.block_on(async move {
                let endpoint = match Endpoint::from_shared(format!("unix://{}", socket.display())) {
                    Ok(endpoint) => endpoint.connect_timeout(timeout),
                    Err(e) => {
                        tracing::error!(error = %e, "invalid kms plugin endpoint");
                        return;
                    }
                };
                let client = Client {
                    channel: endpoint.connect_lazy(),
                    timeout,
                    primed: Arc::new(Mutex::new(Some(primed))),
                };
                let probe = tokio::spawn(probe(client.clone()));
                while let Some(command) = received.recv().await {
                    match command {
                        Command::Decrypt(request, reply) => {
                            let client = client.clone();
                            tokio::spawn(async move {
                                let _ = reply.send(client.decrypt(request).await);
                            });
                        }
                    }
                }
                probe.abort();
            });
        });
        if let Err(e) = started {
            tracing::error!(error = %e, "cannot start the kms plugin connection");
        }
        // Status, then encrypt: two calls.
        let _ = first_round.recv_timeout(timeout * 2 + Duration::from_secs(1));
        KmsService { commands, timeout }
    }

    /// Decrypts a DEK source through the plugin, blocking the caller.
    pub(crate) fn decrypt_blocking(&self, request: proto::DecryptRequest) -> Result<Vec<u8>, String> {
        let (reply, answer) = sync_channel(1);
        self.commands
            .send(Command::Decrypt(request, reply))
            .map_err(|_| "the kms plugin connection is closed".to_string())?;
        answer
            .recv_timeout(self.timeout + Duration::from_secs(1))
            .map_err(|_| DEADLINE_EXCEEDED.to_string())?
    }
}

impl Client {
    /// Tells the starter the first probe round is over.
    pub(crate) fn primed(&self) {
        if let Some(primed) = self.primed.lock().take() {
            let _ = primed.send(());
        }
    }

    pub(crate) async fn status(&self) -> Result<proto::StatusResponse, String> {
        self.call(proto::STATUS_PATH, proto::StatusRequest {}).await
    }

    pub(crate) async fn encrypt(
        &self,
        request: proto::EncryptRequest,
    ) -> Result<proto::EncryptResponse, String> {
        self.call(proto::ENCRYPT_PATH, request).await
    }

    pub(crate) async fn decrypt(&self, request: proto::DecryptRequest) -> Result<Vec<u8>, String> {
        let response: proto::DecryptResponse = self.call(proto::DECRYPT_PATH, request).await?;
        Ok(response.plaintext)
    }

    async fn call<Req, Resp>(&self, path: &'static str, request: Req) -> Result<Resp, String>
    where
        Req: prost::Message + Send + Sync + 'static,
        Resp: prost::Message + Default + Send + Sync + 'static,
    {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        let exchange = async {
            grpc.ready()
                .await
                .map_err(|e| tonic::Status::unavailable(format!("connection error: {e}")))?;
            let codec = tonic_prost::ProstCodec::<Req, Resp>::default();
            grpc.unary(
                tonic::Request::new(request),
                PathAndQuery::from_static(path),
                codec,
            )
            .await
        };
        match tokio::time::timeout(self.timeout, exchange).await {
            Err(_) => Err(DEADLINE_EXCEEDED.into()),
            Ok(Err(status)) => Err(format!(
                "rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            )),
            Ok(Ok(response)) => Ok(response.into_inner()),
        }
    }
}
