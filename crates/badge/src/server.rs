//! `badge server`: config → build → serve → drain.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

/// Flags of `badge server`, named as kube-apiserver's.
#[derive(Args, Debug)]
pub struct ServerOptions {
    /// Where the store, keys and certificates live.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The address to serve on.
    #[arg(long, default_value = "127.0.0.1")]
    bind_address: IpAddr,
    /// The HTTPS port; 0 picks a free one.
    #[arg(long, default_value_t = 6443)]
    secure_port: u16,
    /// Extra names (DNS or IP) for the serving certificate.
    #[arg(long = "tls-san")]
    tls_san: Vec<String>,
    /// Treat requests without a credential as system:anonymous.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_auth: bool,
    /// Issuer of ServiceAccount tokens (repeatable: the first signs, all verify).
    #[arg(
        long = "service-account-issuer",
        default_value = "https://kubernetes.default.svc.cluster.local"
    )]
    service_account_issuer: Vec<String>,
    /// Audiences API requests' tokens must carry (default: the issuers).
    #[arg(long = "api-audiences", value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// The longest token a TokenRequest gets (a Go duration such as 24h; unset: no limit).
    #[arg(long)]
    service_account_max_token_expiration: Option<String>,
    /// Give the kubelet's 3607 s tokens a one-year lifetime with a warnafter claim.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    service_account_extend_token_expiration: bool,
    /// A PEM private key to sign tokens with instead of badge's own rotating keys.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// PEM files of further keys whose tokens verify (repeatable).
    #[arg(long = "service-account-key-file")]
    service_account_key_file: Vec<PathBuf>,
    /// The kind of key badge generates: RS256 (RSA 2048) or ES256 (P-256).
    #[arg(long, default_value = "RS256")]
    service_account_signing_key_type: String,
    /// The JWKS URL published in OIDC discovery (default: this server's /openid/v1/jwks).
    #[arg(long)]
    service_account_jwks_uri: Option<String>,
    /// Create a token Secret for every ServiceAccount, as before Kubernetes 1.24.
    #[arg(long, default_value_t = false, action = clap::ArgAction::Set)]
    legacy_service_account_token_auto_generation: bool,
    /// How many past events the watch cache keeps for watches resuming from a
    /// resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = badge_registry::cache::DEFAULT_HISTORY)]
    default_watch_cache_size: usize,
}

pub async fn run(options: ServerOptions) -> anyhow::Result<()> {
    create_private_dir(&options.data_dir)?;
    let key_type = match options.service_account_signing_key_type.as_str() {
        "RS256" => badge_apiserver::serviceaccount::KeyType::Rs256,
        "ES256" => badge_apiserver::serviceaccount::KeyType::Es256,
        other => anyhow::bail!("--service-account-signing-key-type must be RS256 or ES256, not {other}"),
    };
    // On a first start the certificates are generated and written durably, and so is the
    // signing key (RSA generation alone takes tens of milliseconds): both run on blocking
    // threads while the store opens and the defaults are written.
    let mut sans = vec![options.bind_address.to_string()];
    sans.extend(options.tls_san.iter().cloned());
    let pki_dir = options.data_dir.join("pki");
    let pki = tokio::task::spawn_blocking(move || badge_pki::Pki::load_or_create(&pki_dir, &sans));
    let store_path = options.data_dir.join("store.db");
    let store = badge_store::sqlite::SqliteStore::open(&store_path)
        .with_context(|| format!("opening the store at {}", store_path.display()))?;
    let store = Arc::new(store);
    store.spawn_compactor(std::time::Duration::from_secs(300));
    let store: Arc<dyn badge_store::Store> = store;
    let first_start = options.service_account_signing_key_file.is_none()
        && store
            .get(badge_apiserver::serviceaccount::KEYRING_KEY)
            .await
            .context("reading the signing keys")?
            .0
            .is_none();
    let fresh_key = first_start.then(|| tokio::task::spawn_blocking(move || key_type.generate()));
    let registry = badge_registry::Registry::start(store.clone(), options.default_watch_cache_size).await;

    let pki = pki
        .await
        .context("loading the certificates")?
        .context("loading the certificates")?;
    let tls = pki
        .server_config(&[b"h2", b"http/1.1"])
        .context("building the TLS configuration")?;

    let listener = badge_apiserver::server::bind(SocketAddr::new(options.bind_address, options.secure_port))
        .await
        .with_context(|| format!("binding {}:{}", options.bind_address, options.secure_port))?;
    let address = listener.local_addr()?;
    let host = if address.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        address.ip().to_string()
    };
    let host = if host.contains(':') {
        format!("[{host}]")
    } else {
        host
    };
    let server_url = format!("https://{host}:{}", address.port());
    let kubeconfig = options.data_dir.join("admin.kubeconfig");
    pki.write_admin_kubeconfig(&kubeconfig, &server_url)
        .context("writing the admin kubeconfig")?;

    badge_controllers::ensure_system_namespaces(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    badge_apiserver::rbac::reconcile_defaults(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("reconciling the default RBAC policy: {s}"))?;
    let rbac = badge_apiserver::rbac::Rbac::start(registry.clone());

    let max_expiration = match &options.service_account_max_token_expiration {
        None => 0,
        Some(text) => {
            let seconds = parse_duration(text)
                .with_context(|| format!("--service-account-max-token-expiration={text}"))?;
            if !(3600..=(1i64 << 32)).contains(&seconds) {
                anyhow::bail!(
                    "the service-account-max-token-expiration must be between 1 hour and 2^32 seconds"
                );
            }
            seconds
        }
    };
    let signing_pem = match &options.service_account_signing_key_file {
        Some(path) => {
            Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?)
        }
        None => None,
    };
    let mut extra_keys = Vec::new();
    for path in &options.service_account_key_file {
        let pem = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        extra_keys.extend(
            badge_token::VerifyingKey::all_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        );
    }
    // Retired keys verify as long as the longest token they may have signed lives.
    let longest = if options.service_account_extend_token_expiration {
        365 * 24 * 3600
    } else {
        0
    };
    let keep_after_retire = longest.max(max_expiration).max(3600) + 60;
    let fresh_key = match fresh_key {
        Some(generating) => Some(
            generating
                .await
                .context("generating the signing key")?
                .map_err(|s| anyhow::anyhow!("generating the signing key: {}", s.message))?,
        ),
        None => None,
    };
    let keys = badge_apiserver::serviceaccount::ServiceAccountKeys::load(
        store.clone(),
        key_type,
        signing_pem,
        extra_keys,
        keep_after_retire,
        fresh_key,
    )
    .await
    .map_err(|s| anyhow::anyhow!("loading the service account keys: {}", s.message))?;
    keys.spawn_refresher();
    let issuers = options.service_account_issuer.clone();
    let api_audiences = if options.api_audiences.is_empty() {
        issuers.clone()
    } else {
        options.api_audiences.clone()
    };
    let token_config = badge_apiserver::serviceaccount::TokenConfig {
        issuers: issuers.clone(),
        api_audiences: api_audiences.clone(),
        max_expiration,
        extend_expiration: options.service_account_extend_token_expiration,
        jwks_uri: options
            .service_account_jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{server_url}/openid/v1/jwks")),
    };
    let authenticator = badge_auth::serviceaccount::ServiceAccountAuthenticator {
        keys: keys.verification.clone(),
        issuers,
        api_audiences: api_audiences.clone(),
        getter: Arc::new(badge_apiserver::serviceaccount::CacheTokenGetter(
            registry.clone(),
        )),
        clock: badge_auth::serviceaccount::now,
        cache: Default::default(),
    };
    // Controllers run on the one server holding the controller lease.
    let identity = format!("{}_{}", hostname(), uuid_like());
    let leading = badge_controllers::leader::spawn(registry.clone(), identity);
    badge_controllers::tokens::spawn(
        registry.clone(),
        keys.clone(),
        Arc::new(pki.ca_pem().to_string()),
        options.legacy_service_account_token_auto_generation,
        Some(leading.clone()),
    );
    badge_controllers::spawn_all(registry.clone(), pki.ca_pem().to_string(), Some(leading.clone()));

    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let api = Arc::new(
        badge_apiserver::ApiServer::new(registry, options.anonymous_auth, shutdown_rx.clone())
            .with_rbac(rbac)
            .with_tokens(
                Arc::new(authenticator),
                api_audiences,
                Arc::new(badge_apiserver::serviceaccount::TokenIssuer {
                    keys,
                    config: token_config,
                }),
            ),
    );
    tracing::info!("serving securely on {address}");
    tracing::info!(
        "admin kubeconfig written: export KUBECONFIG={}",
        kubeconfig.display()
    );
    let serving = tokio::spawn(badge_apiserver::server::serve(api, listener, tls, shutdown_rx));

    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = shutdown_tx.send(true);
    serving.await.context("the server task failed")?;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Parses a Go duration (`1h`, `90m`, `1h30m`, `3600s`) into seconds.
fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let mut total = 0i64;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: i64 = number
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {text:?}"))?;
        number.clear();
        total += match c {
            'h' => n * 3600,
            'm' => n * 60,
            's' => n,
            _ => anyhow::bail!("invalid duration {text:?}"),
        };
    }
    if !number.is_empty() {
        anyhow::bail!("invalid duration {text:?}: missing unit");
    }
    Ok(total)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "badge".into())
}

/// A process-unique suffix for the leader identity, as upstream appends a UUID.
fn uuid_like() -> String {
    format!(
        "{:x}{:x}",
        std::process::id(),
        jiff::Timestamp::now().as_nanosecond()
    )
}
