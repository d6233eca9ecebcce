//! `badge token create|list|delete|generate`: bootstrap tokens, as `kubeadm token` manages
//! them: each a Secret `kube-system/bootstrap-token-<id>` written through a running server.
//! `badge token revoke`: one ServiceAccount token, by its IssuedToken record.

use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use clap::Args;
use serde_json::{Map, Value, json};

use badge_auth::bootstrap::{
    DESCRIPTION_KEY, EXPIRATION_KEY, EXTRA_GROUPS_KEY, TOKEN_ID_KEY, TOKEN_SECRET_KEY, USAGE_PREFIX,
};
use badge_client::{Client, Kubeconfig, error_text};
use badge_token::bootstrap::{
    self, BootstrapToken, SECRET_NAME_PREFIX, SECRET_NAMESPACE, SECRET_TYPE, is_valid_extra_group,
};

/// The usages a bootstrap token may have (`KnownTokenUsages`).
const KNOWN_USAGES: [&str; 2] = ["signing", "authentication"];
const TOKEN_PATTERN: &str = "[a-z0-9]{6}.[a-z0-9]{16}";
const ID_PATTERN: &str = "[a-z0-9]{6}";
const GROUP_PATTERN: &str = r"\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z";

/// How to reach the server.
#[derive(Args, Debug)]
pub(crate) struct Connection {
    /// The data dir whose admin kubeconfig is used when --kubeconfig is not given.
    #[arg(long, default_value = "./badge-data")]
    data_dir: PathBuf,
    /// The kubeconfig to reach the server with (default: <data-dir>/admin.kubeconfig).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
}

impl Connection {
    pub(crate) fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    pub(crate) fn client(&self) -> anyhow::Result<Client> {
        let path = self
            .kubeconfig
            .clone()
            .unwrap_or_else(|| self.data_dir.join("admin.kubeconfig"));
        Client::from_kubeconfig(&path)
    }
}

#[derive(Args, Debug)]
pub(crate) struct CreateOptions {
    /// The token to write, `[a-z0-9]{6}.[a-z0-9]{16}`; a random one when absent.
    token: Option<String>,
    /// How long the token lives (a Go duration; 0 never expires).
    #[arg(long, default_value = "24h0m0s")]
    ttl: String,
    /// What the token may be used for: signing, authentication.
    #[arg(long, value_delimiter = ',', default_value = "signing,authentication")]
    usages: Vec<String>,
    /// Extra groups the token authenticates as; each must match
    /// `\Asystem:bootstrappers:[a-z0-9:-]{0,255}[a-z0-9]\z`.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "system:bootstrappers:kubeadm:default-node-token"
    )]
    groups: Vec<String>,
    /// A human friendly description of how this token is used.
    #[arg(long, default_value = "")]
    description: String,
    /// Print the `badge agent` command a node joins with instead of the token alone: the
    /// server and CA pin come from `kube-public/cluster-info`.
    #[arg(long)]
    print_join_command: bool,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args, Debug)]
pub(crate) struct ListOptions {
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args, Debug)]
pub(crate) struct DeleteOptions {
    /// Token ids or whole tokens.
    #[arg(required = true)]
    tokens: Vec<String>,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Args, Debug)]
pub(crate) struct RevokeOptions {
    /// The token's jti (its IssuedToken's name), or a legacy token's Secret name.
    #[arg(required = true)]
    tokens: Vec<String>,
    /// The namespace of the token's ServiceAccount.
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    #[command(flatten)]
    connection: Connection,
}

/// A bootstrap token as `badge token create` writes it.
#[derive(Debug)]
pub(crate) struct NewToken {
    pub token: BootstrapToken,
    /// RFC 3339; None never expires.
    pub expiration: Option<String>,
    pub usages: Vec<String>,
    pub groups: Vec<String>,
    pub description: String,
}

impl NewToken {
    /// Checks the flags as kubeadm does, before anything is written.
    pub(crate) fn from_flags(
        token: Option<&str>,
        ttl: &str,
        usages: &[String],
        groups: &[String],
        description: &str,
        now: jiff::Timestamp,
    ) -> anyhow::Result<NewToken> {
        let token = match token {
            // The token itself is never echoed.
            Some(text) => BootstrapToken::parse(text)
                .with_context(|| format!("the bootstrap token is not of the form {TOKEN_PATTERN:?}"))?,
            None => {
                BootstrapToken::generate().map_err(|_| anyhow::anyhow!("generating a random token failed"))?
            }
        };
        let seconds = crate::server::parse_duration(ttl).with_context(|| format!("--ttl={ttl}"))?;
        let expiration = match seconds {
            0 => None,
            s => {
                let at = now
                    .checked_add(jiff::SignedDuration::from_secs(s))
                    .with_context(|| format!("--ttl={ttl} is too long"))?;
                Some(rfc3339(at))
            }
        };
        let usages: Vec<String> = usages.iter().filter(|u| !u.is_empty()).cloned().collect();
        for usage in &usages {
            if !KNOWN_USAGES.contains(&usage.as_str()) {
                anyhow::bail!(
                    "invalid bootstrap token usage string: {usage}, valid usage options: {}",
                    KNOWN_USAGES.join(",")
                );
            }
        }
        let groups: Vec<String> = groups.iter().filter(|g| !g.is_empty()).cloned().collect();
        if !groups.is_empty() && !usages.iter().any(|u| u == "authentication") {
            anyhow::bail!("token groups cannot be specified unless --usages includes \"authentication\"");
        }
        for group in &groups {
            if !is_valid_extra_group(group) {
                anyhow::bail!("bootstrap group {group:?} is invalid (must match {GROUP_PATTERN})");
            }
        }
        Ok(NewToken {
            token,
            expiration,
            usages,
            groups,
            description: description.to_string(),
        })
    }

    /// The Secret that stores it (kubeadm's `BootstrapTokenToSecret`).
    pub(crate) fn secret(&self) -> Value {
        let mut data = Map::new();
        let mut put = |key: &str, value: &str| {
            data.insert(
                key.to_string(),
                Value::String(base64::engine::general_purpose::STANDARD.encode(value)),
            );
        };
        put(TOKEN_ID_KEY, self.token.id());
        put(TOKEN_SECRET_KEY, self.token.secret().expose());
        if !self.description.is_empty() {
            put(DESCRIPTION_KEY, &self.description);
        }
        if let Some(expiration) = &self.expiration {
            put(EXPIRATION_KEY, expiration);
        }
        for usage in &self.usages {
            put(&format!("{USAGE_PREFIX}{usage}"), "true");
        }
        if !self.groups.is_empty() {
            put(EXTRA_GROUPS_KEY, &self.groups.join(","));
        }
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": self.token.secret_name(), "namespace": SECRET_NAMESPACE},
            "type": SECRET_TYPE,
            "data": data,
        })
    }
}

fn rfc3339(at: jiff::Timestamp) -> String {
    at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn secrets_path() -> String {
    format!("/api/v1/namespaces/{SECRET_NAMESPACE}/secrets")
}

pub(crate) async fn create(options: CreateOptions) -> anyhow::Result<()> {
    let new = NewToken::from_flags(
        options.token.as_deref(),
        &options.ttl,
        &options.usages,
        &options.groups,
        &options.description,
        badge_api::clock::now(),
    )?;
    let client = options.connection.client()?;
    // Read first, so a cluster without cluster-info is not left with an unprinted token.
    let join = if options.print_join_command {
        let (status, body) = client.request("GET", CLUSTER_INFO_PATH, None).await?;
        if status != 200 {
            anyhow::bail!("failed to read kube-public/cluster-info: {}", error_text(&body));
        }
        Some(join_command(&new.token, &body)?)
    } else {
        None
    };
    let secret = new.secret();
    let (status, body) = client
        .request("POST", &secrets_path(), Some(secret.clone()))
        .await?;
    match status {
        200 | 201 => {}
        // kubeadm creates or updates: the same id again replaces the token.
        409 => {
            let path = format!("{}/{}", secrets_path(), new.token.secret_name());
            let (status, current) = client.request("GET", &path, None).await?;
            if status != 200 {
                anyhow::bail!("failed to update bootstrap token: {}", error_text(&current));
            }
            let mut updated = secret;
            updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
            let (status, body) = client.request("PUT", &path, Some(updated)).await?;
            if status != 200 {
                anyhow::bail!("failed to update bootstrap token: {}", error_text(&body));
            }
        }
        _ => anyhow::bail!("failed to create bootstrap token: {}", error_text(&body)),
    }
    println!("{}", join.unwrap_or_else(|| new.token.expose()));
    Ok(())
}

const CLUSTER_INFO_PATH: &str = badge_agent::join::CLUSTER_INFO_PATH;
/// Where a joining node keeps its pods' volumes and its credentials (the kubelet's
/// /var/lib/kubelet).
const JOIN_ROOT_DIR: &str = "/var/lib/badge-agent";

/// The command a node joins with, from the `cluster-info` ConfigMap: the server a joining
/// node is sent to and the pin of the CA it must find there (kubeadm's
/// `--discovery-token-ca-cert-hash`).
pub(crate) fn join_command(token: &BootstrapToken, cluster_info: &Value) -> anyhow::Result<String> {
    let text = cluster_info
        .pointer("/data/kubeconfig")
        .and_then(Value::as_str)
        .context("kube-public/cluster-info has no kubeconfig")?;
    let kubeconfig = Kubeconfig::parse(text).context("parsing the kubeconfig of kube-public/cluster-info")?;
    let cluster = kubeconfig
        .first_cluster()
        .context("the kubeconfig of kube-public/cluster-info has no cluster")?;
    let server = Some(cluster.server.as_str())
        .filter(|s| !s.is_empty())
        .context("the cluster in kube-public/cluster-info has no server")?;
    let ca = cluster
        .inline_ca_pem()
        .context("the cluster in kube-public/cluster-info has no CA")?;
    let hash = badge_pki::ca_cert_hash_from_pem(&ca)
        .context("the CA in kube-public/cluster-info is not a certificate")?;
    Ok(format!(
        "badge agent --bootstrap-token {} --server {server} --discovery-token-ca-cert-hash {hash} --node-name $(hostname) --root-dir {JOIN_ROOT_DIR}",
        token.expose()
    ))
}

pub(crate) fn generate() -> anyhow::Result<()> {
    let token =
        BootstrapToken::generate().map_err(|_| anyhow::anyhow!("generating a random token failed"))?;
    println!("{}", token.expose());
    Ok(())
}

pub(crate) async fn delete(options: DeleteOptions) -> anyhow::Result<()> {
    let client = options.connection.client()?;
    for given in &options.tokens {
        let id = if given.len() == 6
            && given
                .bytes()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        {
            given.clone()
        } else {
            BootstrapToken::parse(given)
                .map(|t| t.id().to_string())
                .with_context(|| {
                    format!("given token didn't match pattern {TOKEN_PATTERN:?} or {ID_PATTERN:?}")
                })?
        };
        let path = format!("{}/{}", secrets_path(), bootstrap::secret_name(&id));
        let (status, body) = client.request("DELETE", &path, None).await?;
        if status != 200 && status != 202 {
            anyhow::bail!("failed to delete bootstrap token {id:?}: {}", error_text(&body));
        }
        println!("bootstrap token {id:?} deleted");
    }
    Ok(())
}

/// Sets `spec.revoked` on each token's IssuedToken: a read and an update, so revoking takes
/// exactly `update issuedtokens`; a conflicting write is retried from a fresh read.
pub(crate) async fn revoke(options: RevokeOptions) -> anyhow::Result<()> {
    const CONFLICT_RETRIES: usize = 5;
    let client = options.connection.client()?;
    let ns = &options.namespace;
    for name in &options.tokens {
        let path = format!("/apis/identity.badge.dev/v1/namespaces/{ns}/issuedtokens/{name}");
        let mut attempt = 0;
        loop {
            let (status, mut record) = client.request("GET", &path, None).await?;
            if status != 200 {
                anyhow::bail!("failed to revoke token {name:?}: {}", error_text(&record));
            }
            if record.pointer("/spec/revoked").and_then(Value::as_bool) == Some(true) {
                println!("issuedtoken.identity.badge.dev/{name} already revoked");
                break;
            }
            match record.get_mut("spec").and_then(Value::as_object_mut) {
                Some(spec) => {
                    spec.insert("revoked".into(), Value::Bool(true));
                }
                None => record["spec"] = json!({"revoked": true}),
            }
            let (status, body) = client.request("PUT", &path, Some(record)).await?;
            match status {
                200 => {
                    println!("issuedtoken.identity.badge.dev/{name} revoked");
                    break;
                }
                409 if attempt < CONFLICT_RETRIES => attempt += 1,
                _ => anyhow::bail!("failed to revoke token {name:?}: {}", error_text(&body)),
            }
        }
    }
    Ok(())
}

/// A listed token, as kubeadm's `BootstrapTokenFromSecret` reads it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ListedToken {
    pub id: String,
    pub expires: Option<jiff::Timestamp>,
    pub usages: Vec<String>,
    pub description: String,
    pub groups: Vec<String>,
}

impl ListedToken {
    pub(crate) fn from_secret(secret: &Value) -> Result<ListedToken, String> {
        let name = secret
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("");
        let data: Vec<(String, String)> = secret
            .get("data")
            .and_then(Value::as_object)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(v.as_str()?)
                    .ok()?;
                Some((k.clone(), String::from_utf8(bytes).ok()?))
            })
            .collect();
        let get = |key: &str| {
            data.iter()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str())
                .unwrap_or("")
        };
        let id = get(TOKEN_ID_KEY);
        if id.is_empty() {
            return Err(format!("bootstrap Token Secret has no token-id data: {name}"));
        }
        if name != format!("{SECRET_NAME_PREFIX}{id}") {
            return Err(format!(
                "bootstrap token name is not of the form '{SECRET_NAME_PREFIX}(token-id)'. Actual: {name:?}. Expected: \"{SECRET_NAME_PREFIX}{id}\""
            ));
        }
        if BootstrapToken::parse(&format!("{id}.{}", get(TOKEN_SECRET_KEY))).is_none() {
            return Err(format!(
                "bootstrap token {name} is not of the form {TOKEN_PATTERN:?}"
            ));
        }
        let expiration = get(EXPIRATION_KEY);
        let expires = if expiration.is_empty() {
            None
        } else {
            Some(
                expiration
                    .parse::<jiff::Timestamp>()
                    .map_err(|e| format!("can't parse expiration time of bootstrap token {name:?}: {e}"))?,
            )
        };
        let mut usages: Vec<String> = data
            .iter()
            .filter(|(_, v)| v == "true")
            .filter_map(|(k, _)| k.strip_prefix(USAGE_PREFIX).map(String::from))
            .collect();
        usages.sort();
        let groups = get(EXTRA_GROUPS_KEY);
        let groups = if groups.is_empty() {
            Vec::new()
        } else {
            groups.split(',').map(String::from).collect()
        };
        Ok(ListedToken {
            id: id.to_string(),
            expires,
            usages,
            description: get(DESCRIPTION_KEY).to_string(),
            groups,
        })
    }

    /// kubeadm's columns, the secret half masked.
    fn cells(&self, now: jiff::Timestamp) -> [String; 6] {
        let (ttl, expires) = match self.expires {
            Some(at) => (
                short_human_duration(at.as_second() - now.as_second()),
                rfc3339(at),
            ),
            None => ("<forever>".to_string(), "<never>".to_string()),
        };
        let or_none = |s: String| if s.is_empty() { "<none>".to_string() } else { s };
        [
            format!("{}.{}", self.id, "*".repeat(16)),
            format!("{ttl:<9}"),
            expires,
            format!("{:<22}", or_none(self.usages.join(","))),
            format!("{:<56}", or_none(self.description.clone())),
            or_none(self.groups.join(",")),
        ]
    }
}

/// apimachinery's `ShortHumanDuration`.
fn short_human_duration(seconds: i64) -> String {
    match seconds {
        s if s < -1 => "<invalid>".into(),
        s if s < 0 => "0s".into(),
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s if s < 86_400 * 365 => format!("{}d", s / 86_400),
        s => format!("{}y", s / 86_400 / 365),
    }
}

/// Rows laid out as Go's tabwriter with kubeadm's settings (minimum width 10, padding 3):
/// every column but the last is padded to its widest cell plus three.
pub(crate) fn table(rows: &[[String; 6]]) -> String {
    let mut widths = [0usize; 5];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max((cell.chars().count() + 3).max(10));
        }
    }
    let mut out = String::new();
    for row in rows {
        for (width, cell) in widths.iter().zip(row.iter()) {
            out.push_str(&format!("{cell:<width$}"));
        }
        out.push_str(&row[5]);
        out.push('\n');
    }
    out
}

pub(crate) async fn list(options: ListOptions) -> anyhow::Result<()> {
    let client = options.connection.client()?;
    let path = format!(
        "{}?fieldSelector=type%3D{}",
        secrets_path(),
        SECRET_TYPE.replace('/', "%2F")
    );
    let (status, body) = client.request("GET", &path, None).await?;
    if status != 200 {
        anyhow::bail!("failed to list bootstrap tokens: {}", error_text(&body));
    }
    let now = badge_api::clock::now();
    let mut rows = vec![[
        "TOKEN".to_string(),
        "TTL".into(),
        "EXPIRES".into(),
        "USAGES".into(),
        "DESCRIPTION".into(),
        "EXTRA GROUPS".into(),
    ]];
    for secret in body["items"].as_array().into_iter().flatten() {
        match ListedToken::from_secret(secret) {
            Ok(token) => rows.push(token.cells(now)),
            Err(e) => eprintln!("{e}"),
        }
    }
    print!("{}", table(&rows));
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn now() -> jiff::Timestamp {
        "2023-11-14T22:13:20Z".parse().unwrap()
    }

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn flags(token: Option<&str>, ttl: &str, usages: &[&str], groups: &[&str]) -> anyhow::Result<NewToken> {
        NewToken::from_flags(token, ttl, &strings(usages), &strings(groups), "", now())
    }

    #[test]
    fn create_writes_kubeadms_secret() {
        let new = NewToken::from_flags(
            Some("abcdef.0123456789abcdef"),
            "1h",
            &strings(&["signing", "authentication"]),
            &strings(&["system:bootstrappers:kubeadm:default-node-token"]),
            "joins nodes",
            now(),
        )
        .unwrap();
        let secret = new.secret();
        assert_eq!(secret["metadata"]["name"], "bootstrap-token-abcdef");
        assert_eq!(secret["metadata"]["namespace"], "kube-system");
        assert_eq!(secret["type"], "bootstrap.kubernetes.io/token");
        let listed = ListedToken::from_secret(&secret).unwrap();
        assert_eq!(
            listed,
            ListedToken {
                id: "abcdef".into(),
                expires: Some("2023-11-14T23:13:20Z".parse().unwrap()),
                usages: strings(&["authentication", "signing"]),
                description: "joins nodes".into(),
                groups: strings(&["system:bootstrappers:kubeadm:default-node-token"]),
            }
        );
        let decode = |key: &str| {
            String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(secret["data"][key].as_str().unwrap())
                    .unwrap(),
            )
            .unwrap()
        };
        assert_eq!(decode("token-secret"), "0123456789abcdef");
        assert_eq!(decode("expiration"), "2023-11-14T23:13:20Z");
        assert_eq!(decode("usage-bootstrap-authentication"), "true");
        // A zero TTL never expires.
        let forever = flags(None, "0", &["authentication"], &[]).unwrap();
        assert!(forever.secret()["data"].get("expiration").is_none());
        assert!(forever.secret()["data"].get("auth-extra-groups").is_none());
    }

    #[test]
    fn create_refuses_what_kubeadm_refuses_without_echoing_the_token() {
        let bad_token = flags(Some("abcdef.0123456789ABCDEF"), "1h", &["signing"], &[]).unwrap_err();
        assert!(
            !format!("{bad_token:#}").contains("0123456789ABCDEF"),
            "{bad_token:#}"
        );
        let bad_usage = flags(None, "1h", &["signing", "encryption"], &[]).unwrap_err();
        assert_eq!(
            bad_usage.to_string(),
            "invalid bootstrap token usage string: encryption, valid usage options: signing,authentication"
        );
        let bad_group = flags(None, "1h", &["authentication"], &["system:masters"]).unwrap_err();
        assert!(
            bad_group.to_string().contains("\"system:masters\" is invalid"),
            "{bad_group}"
        );
        let groups_without_auth = flags(None, "1h", &["signing"], &["system:bootstrappers:a"]).unwrap_err();
        assert!(groups_without_auth.to_string().contains("--usages includes"));
        assert!(flags(None, "1 day", &["signing"], &[]).is_err());
    }

    #[test]
    fn list_masks_the_secret_in_kubeadms_columns() {
        let new = flags(Some("abcdef.0123456789abcdef"), "2h", &["authentication"], &[]).unwrap();
        let listed = ListedToken::from_secret(&new.secret()).unwrap();
        let header = ["TOKEN", "TTL", "EXPIRES", "USAGES", "DESCRIPTION", "EXTRA GROUPS"].map(String::from);
        let text = table(&[header, listed.cells(now())]);
        assert!(!text.contains("0123456789abcdef"), "{text}");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("TOKEN                     TTL         EXPIRES"),
            "{text}"
        );
        assert!(
            lines[1]
                .starts_with("abcdef.****************   2h          2023-11-15T00:13:20Z   authentication"),
            "{text}"
        );
        assert!(lines[1].ends_with("<none>"), "{text}");
    }

    #[test]
    fn listing_refuses_secrets_that_are_not_tokens() {
        let mut secret = flags(Some("abcdef.0123456789abcdef"), "0", &["signing"], &[])
            .unwrap()
            .secret();
        secret["metadata"]["name"] = json!("bootstrap-token-zzzzzz");
        assert!(ListedToken::from_secret(&secret).is_err());
    }

    #[test]
    fn short_human_durations() {
        assert_eq!(short_human_duration(-5), "<invalid>");
        assert_eq!(short_human_duration(-1), "0s");
        assert_eq!(short_human_duration(59), "59s");
        assert_eq!(short_human_duration(3599), "59m");
        assert_eq!(short_human_duration(86_399), "23h");
        assert_eq!(short_human_duration(86_400 * 3), "3d");
        assert_eq!(short_human_duration(86_400 * 800), "2y");
    }
}
