//! `badge server`: config → build → serve → drain.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;

/// Flags of `badge server`, named as kube-apiserver's.
#[derive(Args, Debug)]
pub(crate) struct ServerOptions {
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
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
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
    /// The shortest token a TokenRequest may ask for (a Go duration; upstream's fixed 10m).
    /// Only tests lower it, to see tokens expire.
    #[arg(long, default_value = "10m", hide = true)]
    service_account_min_token_expiration: String,
    /// Record every token issued and each use of a ServiceAccount token in the
    /// identity.badge.dev IssuedToken and ServiceAccountUsage objects.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
    token_usage_tracking: bool,
    /// Clean up idle ServiceAccounts: unused this long, one is marked idle; after as long
    /// again, disabled; after a third period, deleted (a Go duration, or days as `90d`;
    /// empty: off).
    #[arg(long, default_value = "")]
    idle_serviceaccount_cleanup_period: String,
    /// Log the idle cleanup's steps without writing anything.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
    idle_serviceaccount_cleanup_dry_run: bool,
    /// How often token usage noted in memory is written to the store (a Go duration).
    #[arg(long, default_value = "10s")]
    usage_flush_period: String,
    /// A token used from two source addresses within this long (a Go duration; 0 disables)
    /// is flagged suspicious on its IssuedToken and in the audit log.
    #[arg(long, default_value = "10m")]
    suspicious_token_window: String,
    /// Revoke tokens flagged suspicious.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
    revoke_suspicious_tokens: bool,
    /// Give the kubelet's 3607 s tokens a one-year lifetime with a warnafter claim.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
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
    /// Rotate badge's signing keys automatically: when the signing key is older than this Go
    /// duration (e.g. 720h) the next key is published, signs after the publish lead, and the
    /// old key leaves the JWKS once every token it signed has expired. Unset: rotate by hand
    /// with `badge keys rotate`.
    #[arg(long)]
    service_account_key_rotation_period: Option<String>,
    /// How long an automatically rotated key is published in the JWKS before it signs (a Go
    /// duration). Verifiers cache the JWKS for its max-age (1h), so a shorter lead lets a
    /// token reach a verifier that does not yet know its key.
    #[arg(long, default_value = "1h")]
    service_account_key_publish_lead: String,
    /// The JWKS URL published in OIDC discovery (default: this server's /openid/v1/jwks).
    #[arg(long)]
    service_account_jwks_uri: Option<String>,
    /// Create a token Secret for every ServiceAccount, as before Kubernetes 1.24.
    #[arg(long, default_value_t = false, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
    legacy_service_account_token_auto_generation: bool,
    /// How long an auto-generated legacy token Secret may go unused before it is labelled
    /// invalid, and how long after that before it is deleted (a Go duration; positive).
    #[arg(long, default_value = "8760h0m0s")]
    legacy_service_account_token_clean_up_period: String,
    /// Authenticate bootstrap tokens (`<id>.<secret>`) from their Secrets in kube-system.
    #[arg(long, default_value_t = true, num_args = 0..=1, require_equals = true,
          default_missing_value = "true", action = clap::ArgAction::Set, value_parser = go_bool)]
    enable_bootstrap_token_auth: bool,
    /// How many past events the watch cache keeps for watches resuming from a
    /// resourceVersion; older ones get 410 Gone.
    #[arg(long, default_value_t = badge_registry::cache::DEFAULT_HISTORY)]
    default_watch_cache_size: usize,
    /// The most non-mutating requests served at once; more get 429 (0: no limit). Watches
    /// are not counted; system:masters is never refused.
    #[arg(long, default_value_t = 400)]
    max_requests_inflight: usize,
    /// The most mutating requests served at once; more get 429 (0: no limit).
    #[arg(long, default_value_t = 200)]
    max_mutating_requests_inflight: usize,
    /// How long a request may take before it fails with 504; watches are exempt, and a
    /// request's `?timeout=` may shorten it (a Go duration).
    #[arg(long = "request-timeout", default_value = "1m0s")]
    api_request_timeout: String,
    /// How long the server waits on a client that sends nothing: for a request's headers,
    /// the rest of its body, or any HTTP/2 frame (a Go duration).
    #[arg(long, default_value = "60s")]
    client_idle_timeout: String,
    /// The most connections open at once; past it new ones wait until one closes (0: no
    /// limit). Keep it below the open-file limit.
    #[arg(long, default_value_t = 1000)]
    max_connections: usize,
    /// How long a server cut off from its storage goes on serving consistent reads from its
    /// cache and signing tokens with its key ring, counted from the last time it confirmed
    /// them current; past it those answer 503 and /readyz fails (a Go duration).
    #[arg(long, default_value = "30s")]
    storage_stale_read_bound: String,
    /// The server URL published in `kube-public/cluster-info` for joining nodes (kubeadm's
    /// control-plane endpoint). Servers sharing a store must all give the same one, e.g. a
    /// load balancer's address (default: this server's URL).
    #[arg(long)]
    cluster_info_server: Option<String>,
    /// The longest a certificate signed for a CertificateSigningRequest lasts; a request's
    /// `expirationSeconds` may shorten it (a Go duration, kube-controller-manager's flag).
    #[arg(long, default_value = "8760h0m0s")]
    cluster_signing_duration: String,
    /// Serve the web console at https://ADDR/console/ on this address and port, with the API's
    /// certificate (unset: no console). A port of its own keeps the console's session cookie
    /// away from the API port, which takes no cookies at all.
    #[arg(long)]
    console_bind_address: Option<SocketAddr>,
    /// Also serve upstream's ExternalJWTSigner gRPC API on this unix socket (mode 0600), for
    /// a kube-apiserver's `--service-account-signing-endpoint`: it then signs with these keys.
    #[arg(long)]
    external_signer_socket: Option<PathBuf>,
    #[command(flatten)]
    storage: StorageOptions,
    #[command(flatten)]
    encryption: EncryptionOptions,
    /// Re-read the encryption configuration file when it changes: a valid new one replaces
    /// the providers without a restart, an invalid one is logged and the current one kept.
    #[arg(long = "encryption-provider-config-automatic-reload")]
    encryption_provider_config_automatic_reload: bool,
    /// How often the encryption configuration file is checked for changes (a Go duration;
    /// upstream's one minute). Tests shorten it.
    #[arg(
        long = "encryption-provider-config-reload-interval",
        default_value = "1m",
        hide = true
    )]
    encryption_provider_config_reload_interval: String,
    #[command(flatten)]
    audit: AuditOptions,
}

/// The audit log, as kube-apiserver's flags.
#[derive(Args, Debug, Clone)]
pub(crate) struct AuditOptions {
    /// Where the audit log is written (default: <data-dir>/audit.log); `-` writes it to
    /// standard output and an empty value turns it off.
    #[arg(long = "audit-log-path")]
    audit_log_path: Option<String>,
    /// An audit.k8s.io/v1 Policy deciding what each request records (default: every
    /// request at the Metadata level).
    #[arg(long = "audit-policy-file")]
    audit_policy_file: Option<PathBuf>,
    /// The size in megabytes past which the log rotates (0: 100).
    #[arg(long = "audit-log-maxsize", default_value_t = 0)]
    audit_log_maxsize: u64,
    /// How many rotated logs are kept (0: all, subject to --audit-log-maxage).
    #[arg(long = "audit-log-maxbackup", default_value_t = 0)]
    audit_log_maxbackup: usize,
    /// How many days rotated logs are kept (0: regardless of age).
    #[arg(long = "audit-log-maxage", default_value_t = 0)]
    audit_log_maxage: u64,
}

impl AuditOptions {
    /// Where the log goes; None when it is off.
    fn destination(&self, data_dir: &std::path::Path) -> Option<badge_apiserver::audit::log::Destination> {
        use badge_apiserver::audit::log::{Destination, RotationOptions};
        let path = match self.audit_log_path.as_deref() {
            None => data_dir.join("audit.log"),
            Some("") => return None,
            Some("-") => return Some(Destination::Stdout),
            Some(path) => PathBuf::from(path),
        };
        Some(Destination::File(RotationOptions {
            path,
            max_size_mb: self.audit_log_maxsize,
            max_backups: self.audit_log_maxbackup,
            max_age_days: self.audit_log_maxage,
        }))
    }

    /// Adds the audit log to `api`.
    fn apply(
        &self,
        data_dir: &std::path::Path,
        api: badge_apiserver::ApiServer,
    ) -> anyhow::Result<badge_apiserver::ApiServer> {
        let policy = match &self.audit_policy_file {
            Some(path) => badge_apiserver::audit::Policy::load(path)
                .map_err(|e| anyhow::anyhow!("--audit-policy-file: {e}"))?,
            None => badge_apiserver::audit::Policy::metadata_for_everything(),
        };
        let Some(destination) = self.destination(data_dir) else {
            if self.audit_policy_file.is_some() {
                tracing::warn!("--audit-policy-file is ignored: the audit log is off");
            }
            return Ok(api);
        };
        let backend =
            badge_apiserver::audit::log::LogBackend::start(destination.clone(), api.metrics.clone())
                .with_context(|| format!("opening the audit log {destination:?}"))?;
        Ok(api.with_audit_log(policy, Arc::new(backend)))
    }
}

/// Encryption at rest, as kube-apiserver's flag.
#[derive(Args, Debug, Clone)]
pub(crate) struct EncryptionOptions {
    /// An EncryptionConfiguration (apiserver.config.k8s.io/v1, YAML or JSON) naming how each
    /// resource is encrypted in the store. Default: <data-dir>/pki/encryption-config.yaml,
    /// written on the first start to encrypt Secrets with a fresh secretbox key.
    #[arg(long = "encryption-provider-config")]
    pub encryption_provider_config: Option<PathBuf>,
    /// How often the plugin of a `kms` provider is asked its status (a Go duration;
    /// upstream's one minute). Tests shorten it.
    #[arg(long = "kms-v2-status-interval", default_value = "1m", hide = true)]
    pub kms_status_interval: String,
    /// How long writes go on under a DEK whose key id the plugin has not confirmed (a Go
    /// duration; upstream's three minutes). Tests shorten it.
    #[arg(long = "kms-v2-write-dek-ttl", default_value = "3m", hide = true)]
    pub kms_write_ttl: String,
}

impl EncryptionOptions {
    fn kms_timings(&self) -> anyhow::Result<badge_encryption::kms::KmsTimings> {
        let duration = |flag: &str, text: &str| {
            badge_apiserver::limits::parse_go_duration(text)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| anyhow::anyhow!("--{flag} must be a positive duration, not {text:?}"))
        };
        let status_interval = duration("kms-v2-status-interval", &self.kms_status_interval)?;
        Ok(badge_encryption::kms::KmsTimings {
            status_interval,
            retry_interval: status_interval.min(std::time::Duration::from_secs(10)),
            write_ttl: duration("kms-v2-write-dek-ttl", &self.kms_write_ttl)?,
        })
    }

    /// The configuration file in use: the one given, or the data dir's own (written on a
    /// first start).
    fn config_path(&self, data_dir: &std::path::Path) -> anyhow::Result<PathBuf> {
        match &self.encryption_provider_config {
            Some(path) => Ok(path.clone()),
            None => {
                let path = data_dir.join("pki").join(badge_encryption::DEFAULT_CONFIG_FILE);
                if !path.exists() {
                    badge_encryption::config::write_default(&path)
                        .map_err(|e| anyhow::anyhow!("the default encryption configuration: {e}"))?;
                }
                tracing::info!(config = %path.display(), "encrypting Secrets at rest");
                Ok(path)
            }
        }
    }

    fn flag_error(&self, e: badge_encryption::ConfigError) -> anyhow::Error {
        match self.encryption_provider_config {
            Some(_) => anyhow::anyhow!("--encryption-provider-config: {e}"),
            None => anyhow::anyhow!("the default encryption configuration: {e}"),
        }
    }

    /// The transformer of the configuration given, or of the data dir's own.
    pub(crate) fn load(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<badge_encryption::Encryption>> {
        let path = self.config_path(data_dir)?;
        let config =
            badge_encryption::EncryptionConfiguration::load(&path).map_err(|e| self.flag_error(e))?;
        let encryption = badge_encryption::Encryption::with_timings(&config, self.kms_timings()?)
            .map_err(|e| self.flag_error(e))?;
        Ok(Arc::new(encryption))
    }

    /// `store` with values encrypted as configured, the configuration file re-read every
    /// `interval` and a valid new one taking over (`--encryption-provider-config-automatic-reload`).
    pub(crate) fn wrap_reloading(
        &self,
        store: Arc<dyn badge_store::Store>,
        data_dir: &std::path::Path,
        interval: std::time::Duration,
    ) -> anyhow::Result<Arc<dyn badge_store::Store>> {
        let path = self.config_path(data_dir)?;
        let reloading = Arc::new(
            badge_encryption::reload::ReloadingEncryption::load(&path, self.kms_timings()?)
                .map_err(|e| self.flag_error(e))?,
        );
        tokio::spawn(reloading.clone().watch(interval));
        Ok(Arc::new(badge_store::transform::TransformedStore::new(
            store, reloading,
        )))
    }

    /// `store` with values encrypted and decrypted as configured.
    pub(crate) fn wrap(
        &self,
        store: Arc<dyn badge_store::Store>,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<dyn badge_store::Store>> {
        let encryption = self.load(data_dir)?;
        Ok(Arc::new(badge_store::transform::TransformedStore::new(
            store, encryption,
        )))
    }
}

/// Where objects are stored: the embedded store in the data dir, or an etcd cluster that
/// several servers share.
#[derive(Args, Debug, Clone)]
pub(crate) struct StorageOptions {
    /// `embedded` (SQLite in the data dir) or `etcd`.
    #[arg(long = "storage", default_value = "embedded")]
    pub storage: String,
    /// How often history is compacted (a Go duration; 0 never).
    #[arg(long = "etcd-compaction-interval", default_value = "5m")]
    pub compaction_interval: String,
    #[command(flatten)]
    pub etcd: EtcdOptions,
}

/// How to reach etcd, with kube-apiserver's flag names.
#[derive(Args, Debug, Clone)]
pub(crate) struct EtcdOptions {
    /// Client URLs of the etcd members, comma-separated.
    #[arg(long = "etcd-servers", value_delimiter = ',')]
    pub servers: Vec<String>,
    /// The key every object is stored under in etcd.
    #[arg(long = "etcd-prefix", default_value = "/registry")]
    pub prefix: String,
    /// CA certificate that signed the etcd members' serving certificates.
    #[arg(long = "etcd-cafile")]
    pub cafile: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long = "etcd-certfile")]
    pub certfile: Option<PathBuf>,
    /// Private key of the etcd client certificate.
    #[arg(long = "etcd-keyfile")]
    pub keyfile: Option<PathBuf>,
    /// How long one store operation may take before it fails with 504 (a Go duration).
    #[arg(long = "etcd-request-timeout", default_value = "5s")]
    pub request_timeout: String,
}

impl StorageOptions {
    /// Opens the store these options name; `data_dir` holds the embedded one.
    pub(crate) async fn open(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<dyn badge_store::Store>> {
        Ok(self.open_with_embedded(data_dir).await?.0)
    }

    /// Opens the store these options name, and also gives the embedded one's own handle.
    async fn open_with_embedded(
        &self,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<(
        Arc<dyn badge_store::Store>,
        Option<badge_store::sqlite::SqliteStore>,
    )> {
        let compaction = parse_duration(&self.compaction_interval)
            .with_context(|| format!("--etcd-compaction-interval={}", self.compaction_interval))?;
        let compaction = (compaction > 0).then(|| std::time::Duration::from_secs(compaction as u64));
        match self.storage.as_str() {
            "embedded" => {
                let store = open_embedded(data_dir)?;
                if let Some(interval) = compaction {
                    store.spawn_compactor(interval);
                }
                Ok((Arc::new(store.clone()), Some(store)))
            }
            "etcd" => {
                let store = self.etcd.connect().await?;
                if let Some(interval) = compaction {
                    store.spawn_compactor(interval);
                }
                Ok((Arc::new(store), None))
            }
            other => anyhow::bail!("--storage must be embedded or etcd, not {other:?}"),
        }
    }
}

/// The embedded store of a data dir.
pub(crate) fn open_embedded(data_dir: &std::path::Path) -> anyhow::Result<badge_store::sqlite::SqliteStore> {
    let store_path = data_dir.join("store.db");
    badge_store::sqlite::SqliteStore::open(&store_path)
        .with_context(|| format!("opening the store at {}", store_path.display()))
}

impl EtcdOptions {
    /// Connects to the cluster and waits until a member answers.
    pub(crate) async fn connect(&self) -> anyhow::Result<badge_store_etcd::EtcdStore> {
        if self.servers.is_empty() {
            anyhow::bail!("etcd storage needs --etcd-servers");
        }
        let read = |path: &Option<PathBuf>| -> anyhow::Result<Option<Vec<u8>>> {
            path.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        let timeout = parse_duration(&self.request_timeout)
            .with_context(|| format!("--etcd-request-timeout={}", self.request_timeout))?;
        let mut config = badge_store_etcd::EtcdConfig::new(self.servers.clone());
        config.prefix = self.prefix.clone();
        config.ca_pem = read(&self.cafile)?;
        config.client_cert_pem = read(&self.certfile)?;
        config.client_key_pem = read(&self.keyfile)?;
        config.request_timeout = std::time::Duration::from_secs(timeout.max(1) as u64);
        let store = badge_store_etcd::EtcdStore::new(config)?;
        tracing::info!(servers = ?self.servers, prefix = %self.prefix, "connecting to etcd");
        store
            .wait_ready(std::time::Duration::from_secs(60))
            .await
            .map_err(|e| anyhow::anyhow!("etcd did not answer: {e}"))?;
        Ok(store)
    }
}

pub(crate) async fn run(options: ServerOptions) -> anyhow::Result<()> {
    let serve_options = options.serve_options()?;
    if let Some(url) = &options.cluster_info_server
        && !url.starts_with("https://")
    {
        anyhow::bail!("--cluster-info-server must be an https:// URL, not {url}");
    }
    create_private_dir(&options.data_dir)?;
    crate::permissions::check_private(&options.data_dir)?;
    let key_type = match options.service_account_signing_key_type.as_str() {
        "RS256" => badge_keys::KeyType::Rs256,
        "ES256" => badge_keys::KeyType::Es256,
        other => anyhow::bail!("--service-account-signing-key-type must be RS256 or ES256, not {other}"),
    };
    // A first start makes a CA, certificates and a signing key: CPU work that runs on the
    // blocking pool while the store opens and loads and the default objects are written.
    let mut sans = vec![options.bind_address.to_string()];
    sans.extend(options.tls_san.iter().cloned());
    let pki_dir = options.data_dir.join("pki");
    // A data dir without a pki is new, and so (but for a store shared with other servers)
    // is its store: the signing key, the longest step of a first start, is generated from
    // the outset rather than once the store has been opened and found without a key ring.
    let early_key = (options.service_account_signing_key_file.is_none() && !pki_dir.exists())
        .then(|| tokio::task::spawn_blocking(move || key_type.generate_first_of(key_searches())));
    let pki = tokio::task::spawn_blocking(move || badge_pki::Pki::load_or_create(&pki_dir, &sans));
    let (store, embedded) = options.storage.open_with_embedded(&options.data_dir).await?;
    // Until the server serves, signs or starts a controller, nothing has been told of a
    // write: the start-up writes are synced together once they are all made.
    if let Some(embedded) = &embedded {
        embedded
            .defer_sync()
            .context("deferring the store's syncs during start-up")?;
    }
    let store = if options.encryption_provider_config_automatic_reload {
        let interval =
            badge_apiserver::limits::parse_go_duration(&options.encryption_provider_config_reload_interval)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "--encryption-provider-config-reload-interval must be a positive duration"
                    )
                })?;
        options
            .encryption
            .wrap_reloading(store, &options.data_dir, interval)?
    } else {
        options.encryption.wrap(store, &options.data_dir)?
    };
    // A key generated early for a store that has a ring after all goes unused.
    let first_key = match options.service_account_signing_key_file {
        None if matches!(store.get(badge_keys::KEYRING_KEY).await, Ok((None, _))) => {
            Some(early_key.unwrap_or_else(|| {
                tokio::task::spawn_blocking(move || key_type.generate_first_of(key_searches()))
            }))
        }
        _ => None,
    };

    let stale_read_bound = parse_duration(&options.storage_stale_read_bound)
        .with_context(|| format!("--storage-stale-read-bound={}", options.storage_stale_read_bound))?;
    if stale_read_bound < 1 {
        anyhow::bail!("--storage-stale-read-bound must be at least 1s");
    }
    let stale_read_bound = std::time::Duration::from_secs(stale_read_bound as u64);
    let registry = badge_registry::Registry::start_with_bound(
        store.clone(),
        options.default_watch_cache_size,
        stale_read_bound,
    )
    .await;
    badge_controllers::ensure_system_namespaces(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("{s}"))?;
    badge_apiserver::rbac::reconcile_defaults(&registry)
        .await
        .map_err(|s| anyhow::anyhow!("reconciling the default RBAC policy: {s}"))?;
    let pki = pki
        .await
        .context("creating the certificates")?
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

    let cluster_info_server = options.cluster_info_server.as_deref().unwrap_or(&server_url);
    badge_controllers::clusterinfo::ensure(
        &registry,
        &badge_pki::cluster_info_kubeconfig(cluster_info_server, pki.ca_pem()),
    )
    .await
    .map_err(|s| anyhow::anyhow!("writing kube-public/cluster-info: {s}"))?;

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
    let seal_key = pki
        .keyring_seal_key()
        .context("loading the key ring's sealing key")?;
    let keys = badge_keys::ServiceAccountKeys::load(
        store.clone(),
        badge_keys::StoredRing::new(&seal_key),
        key_type,
        match first_key {
            Some(task) => Some(
                task.await
                    .context("generating the first signing key")?
                    .map_err(|s| anyhow::anyhow!("{}", s.message))?,
            ),
            None => None,
        },
        signing_pem,
        extra_keys,
        keep_after_retire,
    )
    .await
    .map_err(|s| anyhow::anyhow!("loading the service account keys: {}", s.message))?;
    if let Some(embedded) = &embedded {
        embedded
            .end_deferred_sync()
            .await
            .context("syncing the store's start-up writes")?;
    }
    keys.spawn_watch(registry.clone(), stale_read_bound);
    let auto_rotation = match &options.service_account_key_rotation_period {
        None => None,
        Some(text) => {
            let period = parse_duration(text)
                .with_context(|| format!("--service-account-key-rotation-period={text}"))?;
            if period < 1 {
                anyhow::bail!("--service-account-key-rotation-period must be at least 1s");
            }
            let lead_text = &options.service_account_key_publish_lead;
            let publish_lead = parse_duration(lead_text)
                .with_context(|| format!("--service-account-key-publish-lead={lead_text}"))?;
            let auto = badge_token::AutoRotation { period, publish_lead };
            keys.enable_auto_rotation(auto)
                .map_err(|s| anyhow::anyhow!("--service-account-key-rotation-period: {}", s.message))?;
            Some(auto)
        }
    };
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
        min_expiration: parse_duration(&options.service_account_min_token_expiration)
            .context("--service-account-min-token-expiration")?
            .max(1),
        extend_expiration: options.service_account_extend_token_expiration,
        jwks_uri: options
            .service_account_jwks_uri
            .clone()
            .unwrap_or_else(|| format!("{server_url}/openid/v1/jwks")),
    };
    let revoked = Arc::new(badge_auth::revocation::RevokedTokens::new());
    let authenticator = badge_auth::serviceaccount::ServiceAccountAuthenticator {
        keys: keys.published().clone(),
        issuers,
        api_audiences: api_audiences.clone(),
        getter: Arc::new(badge_apiserver::serviceaccount::CacheTokenGetter(
            registry.clone(),
        )),
        clock: badge_auth::serviceaccount::now,
        cache: badge_auth::serviceaccount::VerifiedCache::new().context("keying the verified-token cache")?,
        revoked: revoked.clone(),
    };
    let cache_getter = Arc::new(badge_apiserver::serviceaccount::CacheTokenGetter(
        registry.clone(),
    ));
    let mut token_authenticators: Vec<Box<dyn badge_auth::TokenAuthenticator>> =
        vec![Box::new(authenticator)];
    if options.enable_bootstrap_token_auth {
        token_authenticators.push(Box::new(badge_auth::authenticator::AudienceAgnostic {
            api_audiences: api_audiences.clone(),
            inner: Box::new(badge_auth::bootstrap::BootstrapTokenAuthenticator {
                getter: cache_getter,
                clock: badge_auth::serviceaccount::now,
            }),
        }));
    }
    let token_authenticator = badge_auth::authenticator::TokenUnion(token_authenticators);
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
    let idle_period = idle_cleanup_period(&options.idle_serviceaccount_cleanup_period)?;
    let legacy_clean_up_period =
        badge_apiserver::limits::parse_go_duration(&options.legacy_service_account_token_clean_up_period)
            .map_err(|e| anyhow::anyhow!("--legacy-service-account-token-clean-up-period: {e}"))?;
    if legacy_clean_up_period.is_zero() {
        anyhow::bail!("--legacy-service-account-token-clean-up-period must be positive");
    }
    if options.token_usage_tracking {
        // Legacy token use is recorded only with usage tracking, so only then is it tracked.
        badge_controllers::legacytokencleaner::spawn_tracking(registry.clone(), badge_api::clock::now);
    }
    if let Some(auto) = auto_rotation {
        tracing::info!(
            period_seconds = auto.period,
            publish_lead_seconds = auto.publish_lead,
            "service account signing keys rotate automatically"
        );
    }
    // Scheduled writes of the key ring (rotation when enabled, expired keys dropped) are the
    // lease holder's; every server follows the ring by its watch.
    badge_controllers::keyrotation::spawn(keys.clone(), Some(leading.clone()));

    let csr_registry = registry.clone();
    let controller_registry = registry.clone();
    let csr_signer = Arc::new(
        pki.csr_signer()
            .context("loading the CA to sign certificate requests")?,
    );
    let signing_duration = badge_apiserver::limits::parse_go_duration(&options.cluster_signing_duration)
        .map_err(|e| anyhow::anyhow!("--cluster-signing-duration: {e}"))?;
    let usage_flush_period = badge_apiserver::limits::parse_go_duration(&options.usage_flush_period)
        .map_err(|e| anyhow::anyhow!("--usage-flush-period: {e}"))?;
    let suspicious_window = badge_apiserver::limits::parse_go_duration(&options.suspicious_token_window)
        .map_err(|e| anyhow::anyhow!("--suspicious-token-window: {e}"))?;
    if usage_flush_period.is_zero() {
        anyhow::bail!("--usage-flush-period must be positive");
    }
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    if let Some(socket) = &options.external_signer_socket {
        let lifetime = if max_expiration > 0 {
            max_expiration
        } else {
            keep_after_retire - 60
        };
        crate::signer::spawn(socket, keys.clone(), lifetime, shutdown_rx.clone())?;
    }
    tokio::spawn(crate::memory::release_after_bursts(registry.cache().revisions()));
    let api = badge_apiserver::ApiServer::new(registry, options.anonymous_auth, shutdown_rx.clone())
        .with_usage(
            badge_apiserver::usage::UsageRecorder::new(options.token_usage_tracking).with_suspicion(
                badge_apiserver::usage::SuspicionPolicy {
                    window: suspicious_window,
                    revoke: options.revoke_suspicious_tokens,
                },
            ),
        )
        .with_rbac(rbac)
        .with_revocations(revoked)
        .with_tokens(
            Arc::new(token_authenticator),
            api_audiences,
            Arc::new(badge_apiserver::serviceaccount::TokenIssuer {
                keys,
                config: token_config,
            }),
        );
    let api = Arc::new(options.audit.apply(&options.data_dir, api)?);
    // Controllers whose writes must be accounted for record them in the audit log.
    let controller_audit: badge_controllers::audit::Audit = api
        .audit_log
        .clone()
        .map(|auditor| Arc::new(ControllerAudit(auditor)) as Arc<dyn badge_controllers::audit::WriteAudit>);
    badge_controllers::legacytokencleaner::spawn(
        controller_registry.clone(),
        Some(leading.clone()),
        legacy_clean_up_period,
        badge_api::clock::now,
        controller_audit.clone(),
    );
    if let Some(period) = idle_period {
        badge_controllers::idle::spawn(
            controller_registry,
            Some(leading.clone()),
            badge_controllers::idle::IdleCleanup {
                period,
                dry_run: options.idle_serviceaccount_cleanup_dry_run,
            },
            controller_audit,
        );
    }
    // The approver asks the server's own authorizer, as a SubjectAccessReview would.
    badge_controllers::csr::spawn(
        csr_registry,
        csr_signer,
        signing_duration,
        Arc::new(ServerAuthorizer(api.clone())),
        Some(leading.clone()),
    );
    let console = match options.console_bind_address {
        Some(at) => Some(
            crate::console::start(at, api.clone(), tls.clone(), shutdown_rx.clone(), &serve_options).await?,
        ),
        None => None,
    };
    tracing::info!("serving securely on {address}");
    tracing::info!(
        "admin kubeconfig written: export KUBECONFIG={}",
        kubeconfig.display()
    );
    let flusher = api.spawn_usage_flusher(usage_flush_period);
    let serving = tokio::spawn(badge_apiserver::server::serve(
        api,
        listener,
        tls,
        shutdown_rx,
        serve_options,
    ));

    wait_for_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = shutdown_tx.send(true);
    serving.await.context("the server task failed")?;
    // What was noted since the last flush is written before the process ends.
    if let Some(flusher) = flusher {
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), flusher).await;
    }
    if let Some(console) = console {
        console.await.context("the console task failed")?;
    }
    tracing::info!("stopped");
    Ok(())
}

impl ServerOptions {
    /// The connection and request limits the flags set.
    fn serve_options(&self) -> anyhow::Result<badge_apiserver::server::ServeOptions> {
        let positive = |flag: &str, text: &str| -> anyhow::Result<std::time::Duration> {
            let duration = badge_apiserver::limits::parse_go_duration(text)
                .map_err(|e| anyhow::anyhow!("--{flag}={text}: {e}"))?;
            if duration.is_zero() {
                anyhow::bail!("--{flag} must be positive, not {text}");
            }
            Ok(duration)
        };
        Ok(badge_apiserver::server::ServeOptions {
            limits: badge_apiserver::limits::Limits {
                max_requests_inflight: self.max_requests_inflight,
                max_mutating_requests_inflight: self.max_mutating_requests_inflight,
                request_timeout: positive("request-timeout", &self.api_request_timeout)?,
                client_idle_timeout: positive("client-idle-timeout", &self.client_idle_timeout)?,
            },
            max_connections: self.max_connections,
        })
    }
}

/// How many RSA key generations race for the first key: one per core, two at most (the
/// first of two ended in about 0.6 of one's time on average, measured over ten of each;
/// more would buy less and keep cores from the rest of start-up).
fn key_searches() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(2))
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

pub(crate) fn create_private_dir(dir: &std::path::Path) -> anyhow::Result<()> {
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

/// A boolean flag's value as Go's flag packages take it (`strconv.ParseBool`). Boolean flags
/// follow pflag: a bare `--flag` means true, `--flag=false` sets it, and a separate
/// `--flag false` leaves `false` as a positional argument, which `badge server` refuses.
fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {text:?}: invalid syntax")),
    }
}

/// Parses a Go duration (`1h`, `90m`, `1h30m`, `500ms`) into whole seconds.
pub(crate) fn parse_duration(text: &str) -> anyhow::Result<i64> {
    let duration = badge_apiserver::limits::parse_go_duration(text).map_err(anyhow::Error::msg)?;
    i64::try_from(duration.as_secs()).map_err(|_| anyhow::anyhow!("duration {text:?} is too long"))
}

/// The API server's authorizer, shared with controllers that review access.
struct ServerAuthorizer(Arc<badge_apiserver::ApiServer>);

impl badge_auth::Authorizer for ServerAuthorizer {
    fn authorize(&self, attributes: &badge_auth::Attributes) -> badge_auth::Decision {
        self.0.authorizer.authorize(attributes)
    }
}

/// Records controllers' writes in the audit log as requests of their ServiceAccounts.
struct ControllerAudit(Arc<badge_apiserver::audit::Auditor>);

impl badge_controllers::audit::WriteAudit for ControllerAudit {
    fn record(&self, write: &badge_controllers::audit::Write<'_>) {
        let username = write.username();
        let user = badge_auth::UserInfo {
            name: username,
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
                "system:authenticated".into(),
            ],
            ..Default::default()
        };
        let info = badge_api::request_info::RequestInfo {
            is_resource_request: true,
            verb: write.verb.to_string(),
            api_prefix: if write.resource.group.is_empty() {
                "api"
            } else {
                "apis"
            }
            .into(),
            api_group: write.resource.group.into(),
            api_version: write.resource.version.into(),
            namespace: write.namespace.into(),
            resource: write.resource.plural.into(),
            subresource: write.subresource.into(),
            name: write.name.into(),
            namespace_scoped_path: !write.namespace.is_empty(),
            ..Default::default()
        };
        self.0.internal_write(&badge_apiserver::audit::InternalWrite {
            user: &user,
            info: &info,
            uid: write.uid,
            failure: write.failure,
        });
    }
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
        badge_api::clock::now().as_nanosecond()
    )
}

/// `--idle-serviceaccount-cleanup-period`: a Go duration or whole days (`90d`); None when off.
fn idle_cleanup_period(text: &str) -> anyhow::Result<Option<std::time::Duration>> {
    if text.is_empty() {
        return Ok(None);
    }
    let period = match text.strip_suffix('d').and_then(|days| days.parse::<u64>().ok()) {
        Some(days) => std::time::Duration::from_secs(days.saturating_mul(86400)),
        None => badge_apiserver::limits::parse_go_duration(text)
            .map_err(|e| anyhow::anyhow!("--idle-serviceaccount-cleanup-period: {e}"))?,
    };
    if period.is_zero() {
        anyhow::bail!("--idle-serviceaccount-cleanup-period must be positive");
    }
    Ok(Some(period))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Command {
        #[command(flatten)]
        options: ServerOptions,
    }

    fn parse(args: &[&str]) -> Result<ServerOptions, clap::Error> {
        Command::try_parse_from(std::iter::once("server").chain(args.iter().copied())).map(|c| c.options)
    }

    type Flag = fn(&ServerOptions) -> bool;

    /// Every boolean flag of `badge server`, with its default.
    const BOOLEAN_FLAGS: [(&str, Flag, bool); 4] = [
        ("anonymous-auth", |o| o.anonymous_auth, true),
        (
            "service-account-extend-token-expiration",
            |o| o.service_account_extend_token_expiration,
            true,
        ),
        (
            "legacy-service-account-token-auto-generation",
            |o| o.legacy_service_account_token_auto_generation,
            false,
        ),
        (
            "enable-bootstrap-token-auth",
            |o| o.enable_bootstrap_token_auth,
            true,
        ),
    ];

    #[test]
    fn boolean_flags_keep_their_defaults_when_absent() {
        let options = parse(&[]).unwrap();
        for (name, value, default) in BOOLEAN_FLAGS {
            assert_eq!(value(&options), default, "--{name}");
        }
    }

    #[test]
    fn a_bare_boolean_flag_means_true() {
        for (name, value, _) in BOOLEAN_FLAGS {
            let options = parse(&[&format!("--{name}")]).unwrap();
            assert!(value(&options), "--{name}");
        }
    }

    #[test]
    fn boolean_flags_take_a_value_after_an_equals_sign_as_go_parses_it() {
        for (name, value, _) in BOOLEAN_FLAGS {
            for text in ["true", "1", "t", "T", "TRUE", "True"] {
                let options = parse(&[&format!("--{name}={text}")]).unwrap();
                assert!(value(&options), "--{name}={text}");
            }
            for text in ["false", "0", "f", "F", "FALSE", "False"] {
                let options = parse(&[&format!("--{name}={text}")]).unwrap();
                assert!(!value(&options), "--{name}={text}");
            }
        }
    }

    #[test]
    fn a_separate_word_after_a_boolean_flag_is_not_its_value() {
        for (name, _, _) in BOOLEAN_FLAGS {
            for word in ["false", "true"] {
                let flag = format!("--{name}");
                let error = parse(&[&flag, word]).err().unwrap();
                assert_eq!(
                    error.kind(),
                    clap::error::ErrorKind::UnknownArgument,
                    "--{name} {word}: {error}"
                );
            }
            // The next flag is not taken as the value either.
            let options = parse(&[&format!("--{name}"), "--secure-port=7443"]).unwrap();
            assert_eq!(options.secure_port, 7443);
        }
    }

    #[test]
    fn a_boolean_flag_refuses_a_value_go_would_not_parse() {
        for (name, _, _) in BOOLEAN_FLAGS {
            for text in ["yes", "", "tRuE"] {
                let error = parse(&[&format!("--{name}={text}")]).err().unwrap();
                assert_eq!(
                    error.kind(),
                    clap::error::ErrorKind::ValueValidation,
                    "--{name}={text}: {error}"
                );
            }
        }
    }
}
