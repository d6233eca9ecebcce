//! The `badge` binary: parse flags into a config, build the server, run, drain on SIGTERM.

mod console;
mod encryption_cmd;
mod inspect;
mod keys;
mod kms_plugin;
mod kubeconfig_cmd;
mod log_writer;
mod memory;
mod migrate;
mod node;
mod oidc_cmd;
mod permissions;
mod rbac_suggest;
mod server;
mod serviceaccount_cmd;
mod signer;
mod token_cmd;
mod usage_cmd;
mod webhook_config;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "badge",
    version,
    about = "Kubernetes ServiceAccount identity as one standalone server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the API server.
    Server(Box<server::ServerOptions>),
    /// Play the kubelet's volume part: write and refresh the projected, secret and
    /// configMap volumes of the pods bound to a node (which joins with
    /// --bootstrap-token, or uses --kubeconfig).
    Agent(badge_agent::AgentOptions),
    /// How stored objects are encrypted at rest, and their rewrite under a new key.
    #[command(subcommand)]
    Encryption(encryption_cmd::EncryptionCommand),
    /// Manage the ServiceAccount signing keys of a running server.
    Keys(keys::KeysOptions),
    /// Serve a KMS v2 plugin (upstream's gRPC API on a unix socket) that seals with a local
    /// AES key: for tests and single-machine use of the `kms` encryption provider.
    KmsPlugin(kms_plugin::KmsPluginOptions),
    /// Write a kubeconfig that authenticates as a ServiceAccount.
    Kubeconfig(kubeconfig_cmd::KubeconfigOptions),
    /// Copy every object (and the signing keys) between the embedded store of a data dir
    /// and etcd, keeping uids and data.
    Migrate(migrate::MigrateOptions),
    /// Node credentials.
    #[command(subcommand)]
    Node(node::NodeCommand),
    /// The issuer's OIDC documents, for verifiers that cannot reach the server.
    #[command(subcommand)]
    Oidc(oidc_cmd::OidcCommand),
    /// Serve upstream's ExternalJWTSigner gRPC API on a unix socket, signing with the key
    /// ring of a data dir's or an etcd deployment's servers and following its rotations.
    Signer(signer::SignerOptions),
    /// Work with tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Write the kubeconfig-format file a kube-apiserver's token or authorization webhook
    /// reads: badge's webhook URL and CA, and a client certificate for the apiserver.
    WebhookConfig(webhook_config::WebhookConfigOptions),
    /// Least-privilege RBAC from the audit log.
    #[command(subcommand)]
    Rbac(rbac_suggest::RbacCommand),
    /// Enable or disable a ServiceAccount.
    #[command(subcommand, name = "serviceaccount", alias = "sa")]
    ServiceAccount(serviceaccount_cmd::ServiceAccountCommand),
    /// List the ServiceAccounts and tokens unused for a while.
    Usage(usage_cmd::UsageOptions),
}

#[derive(Subcommand)]
enum TokenCommand {
    /// Decode a token for people and check whether the server accepts it.
    Inspect(inspect::InspectOptions),
    /// Create a bootstrap token on the server and print it.
    Create(token_cmd::CreateOptions),
    /// List the bootstrap tokens on the server, their secrets masked.
    List(token_cmd::ListOptions),
    /// Delete bootstrap tokens, by id or whole token.
    Delete(token_cmd::DeleteOptions),
    /// Revoke ServiceAccount tokens by jti (or a legacy token's Secret name): they fail
    /// authentication on every server at once, the ServiceAccount's other tokens keep working.
    Revoke(token_cmd::RevokeOptions),
    /// Print a new random bootstrap token, without a server.
    Generate,
}

fn main() -> std::process::ExitCode {
    memory::limit_arenas();
    // A usage error prints clap's message and exits 2 at once: no thread is started before.
    let cli = Cli::parse();
    let (log_output, flush_logs) = log_writer::start();
    let dropped_lines = log_output.error_counter();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BADGE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(log_output)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Server(options) => server::run(*options).await,
            Command::Migrate(options) => migrate::run(options).await,
            Command::Agent(options) => badge_agent::run(options, terminated()).await,
            Command::Encryption(command) => encryption_cmd::run(command).await,
            Command::Keys(options) => keys::run(options).await,
            Command::KmsPlugin(options) => kms_plugin::run(options, terminated()).await,
            Command::Kubeconfig(options) => kubeconfig_cmd::run(options).await,
            Command::Oidc(command) => oidc_cmd::run(command).await,
            Command::Node(command) => node::run(command),
            Command::Signer(options) => signer::run(options, terminated()).await,
            Command::WebhookConfig(options) => webhook_config::run(options),
            Command::Token(TokenCommand::Inspect(options)) => inspect::run(options).await,
            Command::Token(TokenCommand::Create(options)) => token_cmd::create(options).await,
            Command::Token(TokenCommand::List(options)) => token_cmd::list(options).await,
            Command::Token(TokenCommand::Delete(options)) => token_cmd::delete(options).await,
            Command::Token(TokenCommand::Revoke(options)) => token_cmd::revoke(options).await,
            Command::Token(TokenCommand::Generate) => token_cmd::generate(),
            Command::Usage(options) => usage_cmd::run(options).await,
            Command::Rbac(command) => rbac_suggest::run(command).await,
            Command::ServiceAccount(command) => serviceaccount_cmd::run(command).await,
        }
    });
    // Every line logged is written before the outcome is printed.
    drop(flush_logs);
    log_writer::report_dropped(&dropped_lines);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// Completes on SIGTERM or Ctrl-C.
async fn terminated() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
