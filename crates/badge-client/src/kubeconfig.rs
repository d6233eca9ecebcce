//! The part of a kubeconfig kubectl reads to reach one server: clusters, users and
//! contexts by name, the current context, CA and client certificate files or inline
//! data, a token or token file, and `insecure-skip-tls-verify`
//! (client-go: tools/clientcmd/api/v1/types.go for the fields, tools/clientcmd/loader.go
//! for resolving relative paths against the kubeconfig's directory,
//! tools/clientcmd/client_config.go for how a context becomes a connection).

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use serde::Deserialize;

use crate::Identity;

/// A kubeconfig file as read from disk, its relative paths already resolved.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Kubeconfig {
    #[serde(deserialize_with = "null_as_default")]
    /// The `clusters` list: servers by name.
    pub clusters: Vec<NamedCluster>,
    #[serde(deserialize_with = "null_as_default")]
    /// The `users` list: credentials by name.
    pub users: Vec<NamedUser>,
    #[serde(deserialize_with = "null_as_default")]
    /// The `contexts` list: pairs of a cluster and a user, by name.
    pub contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", deserialize_with = "null_as_default")]
    /// The context used when none is named.
    pub current_context: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
/// One entry of `clusters`.
pub struct NamedCluster {
    /// The name contexts refer to it by.
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    /// The server and how it is trusted.
    pub cluster: Cluster,
}

#[derive(Default, Deserialize)]
#[serde(default)]
/// One entry of `users`.
pub struct NamedUser {
    /// The name contexts refer to it by.
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    /// The credentials.
    pub user: User,
}

// Hand-written so a token or key never reaches a log.
impl std::fmt::Debug for NamedUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NamedUser")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
/// One entry of `contexts`.
pub struct NamedContext {
    /// The name `current-context` refers to it by.
    pub name: String,
    #[serde(deserialize_with = "null_as_default")]
    /// The cluster, user and namespace it pairs.
    pub context: Context,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
/// A `cluster` entry's fields (client-go's `clientcmdapi.Cluster`).
pub struct Cluster {
    /// The server's URL, `https://host[:port]`.
    pub server: String,
    /// The name to verify the server certificate against, instead of the URL's host.
    pub tls_server_name: Option<String>,
    /// Skip verifying the server certificate.
    pub insecure_skip_tls_verify: bool,
    /// Path of a PEM CA bundle trusted for the server.
    pub certificate_authority: Option<PathBuf>,
    /// Base64 of a PEM CA bundle, preferred over `certificate-authority`.
    pub certificate_authority_data: Option<String>,
}

#[derive(Default, Deserialize)]
#[serde(default, rename_all = "kebab-case")]
/// A `user` entry's fields (client-go's `clientcmdapi.AuthInfo`).
pub struct User {
    /// Path of a PEM client certificate.
    pub client_certificate: Option<PathBuf>,
    /// Base64 of a PEM client certificate, preferred over the path.
    pub client_certificate_data: Option<String>,
    /// Path of the client certificate's PEM key.
    pub client_key: Option<PathBuf>,
    /// Base64 of the client certificate's PEM key, preferred over the path.
    pub client_key_data: Option<String>,
    /// A bearer token.
    pub token: Option<String>,
    #[serde(rename = "tokenFile")]
    /// Path of a file holding a bearer token; when readable it wins over `token`.
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
/// A `context` entry's fields.
pub struct Context {
    /// Name of the cluster entry.
    pub cluster: String,
    /// Name of the user entry.
    pub user: String,
    /// The default namespace of requests made in this context.
    pub namespace: Option<String>,
}

/// `user: null`, `contexts: null` (as client-go writes unset lists) or an absent section
/// reads as an empty one.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

/// What a context resolves to: where the server is, how it is trusted, who calls it.
pub struct ClientConfig {
    /// `https://host[:port]`.
    pub server: String,
    /// Which certificates the server's must chain to.
    pub trust: Trust,
    /// The name the server certificate must carry, when not the server's host.
    pub tls_server_name: Option<String>,
    /// What the client presents.
    pub identity: Identity,
    /// The context's namespace, when it names one.
    pub namespace: Option<String>,
}

/// How the server's certificate is checked.
pub enum Trust {
    /// It must chain to one of these PEM CA certificates.
    Ca(Vec<u8>),
    /// Not at all (`insecure-skip-tls-verify`): the connection is encrypted to whoever answers.
    SkipVerify,
}

impl Kubeconfig {
    /// Reads a kubeconfig; relative file paths in it are taken relative to its directory,
    /// as client-go resolves them.
    pub fn load(path: &Path) -> anyhow::Result<Kubeconfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut config = Kubeconfig::parse(&text).with_context(|| format!("parsing {}", path.display()))?;
        config.resolve_paths(path.parent().unwrap_or(Path::new(".")));
        Ok(config)
    }

    /// Parses kubeconfig text (YAML or JSON); its paths stay as written.
    pub fn parse(text: &str) -> anyhow::Result<Kubeconfig> {
        Ok(serde_yaml_ng::from_str(text)?)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let resolve = |path: &mut Option<PathBuf>| {
            if let Some(p) = path
                .as_mut()
                .filter(|p| !p.as_os_str().is_empty() && p.is_relative())
            {
                *p = base.join(&*p);
            }
        };
        for cluster in &mut self.clusters {
            resolve(&mut cluster.cluster.certificate_authority);
        }
        for user in &mut self.users {
            resolve(&mut user.user.client_certificate);
            resolve(&mut user.user.client_key);
            resolve(&mut user.user.token_file);
        }
    }

    /// The cluster entry named `name`.
    pub fn cluster(&self, name: &str) -> Option<&Cluster> {
        self.clusters.iter().find(|c| c.name == name).map(|c| &c.cluster)
    }

    /// The user entry named `name`.
    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name).map(|u| &u.user)
    }

    /// The context entry named `name`.
    pub fn context(&self, name: &str) -> Option<&Context> {
        self.contexts.iter().find(|c| c.name == name).map(|c| &c.context)
    }

    /// The first cluster: a discovery kubeconfig (kube-public/cluster-info) holds one,
    /// under the empty name, and no context.
    pub fn first_cluster(&self) -> Option<&Cluster> {
        self.clusters.first().map(|c| &c.cluster)
    }

    /// The current context's cluster, or an error naming what is missing.
    pub fn current_cluster(&self) -> anyhow::Result<&Cluster> {
        let context = self.current()?;
        self.cluster(&context.cluster)
            .ok_or_else(|| anyhow!("kubeconfig has no clusters entry {:?}", context.cluster))
    }

    /// The current context's server URL.
    pub fn current_server(&self) -> anyhow::Result<&str> {
        Some(self.current_cluster()?.server.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| anyhow!("the cluster has no server"))
    }

    fn current(&self) -> anyhow::Result<&Context> {
        if self.current_context.is_empty() {
            bail!("the kubeconfig has no current context");
        }
        self.context(&self.current_context)
            .ok_or_else(|| anyhow!("kubeconfig has no contexts entry {:?}", self.current_context))
    }

    /// The current context as a connection: server, trust and credential.
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let context = self.current()?;
        let cluster = self
            .cluster(&context.cluster)
            .ok_or_else(|| anyhow!("kubeconfig has no clusters entry {:?}", context.cluster))?;
        // A context may name no user (anonymous); one it names must exist.
        let default_user = User::default();
        let user = match context.user.as_str() {
            "" => &default_user,
            name => self
                .user(name)
                .ok_or_else(|| anyhow!("kubeconfig has no users entry {name:?}"))?,
        };
        if cluster.server.is_empty() {
            bail!("the cluster has no server");
        }
        let ca = cluster.ca_pem()?;
        let trust = match (ca, cluster.insecure_skip_tls_verify) {
            (Some(_), true) => {
                bail!("specifying a root certificates file with the insecure flag is not allowed")
            }
            (Some(ca), false) => Trust::Ca(ca),
            (None, true) => Trust::SkipVerify,
            (None, false) => bail!("the cluster has no certificate authority"),
        };
        Ok(ClientConfig {
            server: cluster.server.clone(),
            trust,
            tls_server_name: cluster.tls_server_name.clone().filter(|n| !n.is_empty()),
            identity: user.identity()?,
            namespace: context.namespace.clone().filter(|n| !n.is_empty()),
        })
    }
}

impl Cluster {
    /// The inline CA as PEM text; a file is not read (in a kubeconfig fetched from a
    /// server, a path names a file on the server's machine).
    pub fn inline_ca_pem(&self) -> Option<String> {
        let data = self.certificate_authority_data.as_deref()?;
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()?;
        String::from_utf8(pem).ok()
    }

    /// The CA certificates, inline or from the file; None when neither is set.
    pub fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        inline_or_file(
            self.certificate_authority_data.as_deref(),
            self.certificate_authority.as_deref(),
        )
    }
}

impl User {
    /// The credential this user presents. A client certificate comes before a token; a
    /// token file, when readable, before an inline token (client-go rereads the file and
    /// lets it win).
    pub fn identity(&self) -> anyhow::Result<Identity> {
        let cert = inline_or_file(
            self.client_certificate_data.as_deref(),
            self.client_certificate.as_deref(),
        )?;
        let key = inline_or_file(self.client_key_data.as_deref(), self.client_key.as_deref())?;
        match (cert, key) {
            (Some(cert_pem), Some(key_pem)) => return Ok(Identity::Certificate { cert_pem, key_pem }),
            (Some(_), None) => bail!("the user has a client certificate but no key"),
            (None, Some(_)) => bail!("the user has a client key but no certificate"),
            (None, None) => {}
        }
        let inline = self.token.clone().filter(|t| !t.is_empty());
        if let Some(file) = self.token_file.as_deref().filter(|f| !f.as_os_str().is_empty()) {
            match std::fs::read_to_string(file) {
                Ok(text) if !text.trim().is_empty() => return Ok(Identity::Bearer(text.trim().to_string())),
                Ok(_) if inline.is_none() => bail!("the token file {} is empty", file.display()),
                Err(e) if inline.is_none() => {
                    return Err(anyhow::Error::new(e).context(format!("reading {}", file.display())));
                }
                _ => {}
            }
        }
        Ok(inline.map_or(Identity::Anonymous, Identity::Bearer))
    }
}

/// Inline base64 data, else the file's bytes; None when neither is set.
fn inline_or_file(data: Option<&str>, file: Option<&Path>) -> anyhow::Result<Option<Vec<u8>>> {
    if let Some(data) = data.filter(|d| !d.is_empty()) {
        return base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .context("decoding base64 data")
            .map(Some);
    }
    match file.filter(|f| !f.as_os_str().is_empty()) {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading {}", path.display()))
            .map(Some),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(text)
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn the_current_context_picks_its_cluster_and_user_by_name() {
        let config = Kubeconfig::parse(&format!(
            r#"
apiVersion: v1
kind: Config
current-context: second
clusters:
- name: a
  cluster: {{server: "https://a:1", certificate-authority-data: "{ca_a}"}}
- name: b
  cluster: {{server: "https://b:2", certificate-authority-data: "{ca_b}"}}
users:
- name: alice
  user: {{token: alice-token}}
- name: bob
  user: {{token: bob-token}}
contexts:
- name: first
  context: {{cluster: a, user: alice}}
- name: second
  context: {{cluster: b, user: bob, namespace: team}}
"#,
            ca_a = b64("CA A"),
            ca_b = b64("CA B"),
        ))
        .unwrap();
        let resolved = config.client_config().unwrap();
        assert_eq!(resolved.server, "https://b:2");
        assert!(matches!(resolved.trust, Trust::Ca(ca) if ca == b"CA B"));
        assert!(matches!(resolved.identity, Identity::Bearer(t) if t == "bob-token"));
        assert_eq!(resolved.namespace.as_deref(), Some("team"));
    }

    #[test]
    fn relative_paths_are_resolved_against_the_kubeconfig_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("pki")).unwrap();
        write(dir.path(), "pki/ca.crt", "CA FILE");
        write(dir.path(), "pki/client.crt", "CERT FILE");
        write(dir.path(), "pki/client.key", "KEY FILE");
        let absolute = write(dir.path(), "other.key", "ABSOLUTE KEY");
        let path = write(
            dir.path(),
            "config",
            &format!(
                r#"
current-context: c
clusters:
- name: k
  cluster: {{server: "https://k:6443", certificate-authority: pki/ca.crt}}
users:
- name: u
  user: {{client-certificate: pki/client.crt, client-key: pki/client.key}}
- name: abs
  user: {{client-key: {}}}
contexts:
- name: c
  context: {{cluster: k, user: u}}
"#,
                absolute.display()
            ),
        );
        // Read from elsewhere: the paths must not depend on the working directory.
        let config = Kubeconfig::load(&path).unwrap();
        assert_eq!(
            config.cluster("k").unwrap().certificate_authority.as_deref(),
            Some(dir.path().join("pki/ca.crt").as_path())
        );
        assert_eq!(
            config.user("abs").unwrap().client_key.as_deref(),
            Some(absolute.as_path())
        );
        let resolved = config.client_config().unwrap();
        assert!(matches!(resolved.trust, Trust::Ca(ca) if ca == b"CA FILE"));
        assert!(matches!(
            resolved.identity,
            Identity::Certificate { cert_pem, key_pem } if cert_pem == b"CERT FILE" && key_pem == b"KEY FILE"
        ));
    }

    #[test]
    fn inline_data_wins_over_a_file() {
        let config = Kubeconfig::parse(&format!(
            r#"
current-context: c
clusters:
- name: k
  cluster: {{server: "https://k", certificate-authority: /nonexistent/ca.crt, certificate-authority-data: "{}"}}
users:
- name: u
  user: {{client-certificate-data: "{}", client-key-data: "{}", client-key: /nonexistent/key}}
contexts:
- name: c
  context: {{cluster: k, user: u}}
"#,
            b64("INLINE CA"),
            b64("INLINE CERT"),
            b64("INLINE KEY")
        ))
        .unwrap();
        assert_eq!(
            config.cluster("k").unwrap().inline_ca_pem().as_deref(),
            Some("INLINE CA")
        );
        let resolved = config.client_config().unwrap();
        assert!(matches!(resolved.trust, Trust::Ca(ca) if ca == b"INLINE CA"));
        assert!(
            matches!(resolved.identity, Identity::Certificate { key_pem, .. } if key_pem == b"INLINE KEY")
        );
    }

    #[test]
    fn a_token_file_is_read_relative_to_the_kubeconfig_and_wins_over_a_token() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "token", "file-token\n");
        let path = write(
            dir.path(),
            "config",
            r#"
current-context: c
clusters:
- name: k
  cluster: {server: "https://k", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: inline-token, tokenFile: token}
contexts:
- name: c
  context: {cluster: k, user: u}
"#,
        );
        let resolved = Kubeconfig::load(&path).unwrap().client_config().unwrap();
        assert!(matches!(resolved.trust, Trust::SkipVerify));
        assert!(matches!(resolved.identity, Identity::Bearer(t) if t == "file-token"));
    }

    #[test]
    fn null_lists_as_client_go_writes_them_read_as_empty() {
        let config = Kubeconfig::parse(
            "apiVersion: v1\nclusters:\n- cluster:\n    server: https://k:6443\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\nkind: Config\npreferences: {}\nusers: null\n",
        )
        .unwrap();
        assert_eq!(config.first_cluster().unwrap().server, "https://k:6443");
        assert!(config.contexts.is_empty() && config.users.is_empty());
    }

    #[test]
    fn a_user_without_credentials_or_a_null_user_is_anonymous() {
        for user in ["user: {}", "user: null", ""] {
            let config = Kubeconfig::parse(&format!(
                "current-context: c\nclusters:\n- name: k\n  cluster: {{server: \"https://k\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  {user}\ncontexts:\n- name: c\n  context: {{cluster: k, user: u}}\n"
            ))
            .unwrap();
            assert!(
                matches!(config.client_config().unwrap().identity, Identity::Anonymous),
                "{user}"
            );
        }
    }

    #[test]
    fn what_cannot_be_connected_to_is_refused_with_the_reason() {
        let cases = [
            ("clusters: []\ncontexts: []\n", "no current context"),
            ("current-context: gone\n", "no contexts entry \"gone\""),
            (
                "current-context: c\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n",
                "no clusters entry \"k\"",
            ),
            (
                "current-context: c\nclusters:\n- name: k\n  cluster: {server: \"https://k\", insecure-skip-tls-verify: true}\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n",
                "no users entry \"u\"",
            ),
            (
                "current-context: c\nclusters:\n- name: k\n  cluster: {server: \"https://k\"}\ncontexts:\n- name: c\n  context: {cluster: k}\n",
                "no certificate authority",
            ),
            (
                "current-context: c\nclusters:\n- name: k\n  cluster: {server: \"https://k\", certificate-authority-data: Q0E=, insecure-skip-tls-verify: true}\ncontexts:\n- name: c\n  context: {cluster: k}\n",
                "insecure flag is not allowed",
            ),
            (
                "current-context: c\nclusters:\n- name: k\n  cluster: {server: \"https://k\", insecure-skip-tls-verify: true}\nusers:\n- name: u\n  user: {client-certificate-data: Q0E=}\ncontexts:\n- name: c\n  context: {cluster: k, user: u}\n",
                "certificate but no key",
            ),
        ];
        for (text, expected) in cases {
            let error = Kubeconfig::parse(text)
                .and_then(|c| c.client_config().map(|_| ()))
                .unwrap_err();
            assert!(format!("{error:#}").contains(expected), "{text}: {error:#}");
        }
    }
}
