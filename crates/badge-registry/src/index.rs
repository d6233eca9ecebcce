//! Secondary indexes of the watch cache, for the reads a request path makes often: the pods
//! bound to a node (the Node authorizer, upstream's `plugin/pkg/auth/authorizer/node` graph)
//! and the Secrets that belong to a ServiceAccount (its token Secrets). They are kept on
//! every event, so a lookup touches only the objects it returns.

use std::collections::{BTreeMap, BTreeSet};

use crate::cache::CachedObject;

/// Where pods are stored (`resources` core/v1 pods).
pub(crate) const PODS_PREFIX: &str = "/registry/pods/";
/// Where Secrets are stored (`resources` core/v1 secrets).
pub(crate) const SECRETS_PREFIX: &str = "/registry/secrets/";

#[derive(Default)]
pub(crate) struct Indexes {
    /// `spec.nodeName` → pod keys.
    pods_by_node: BTreeMap<Box<str>, BTreeSet<String>>,
    /// (namespace, `kubernetes.io/service-account.name`) → Secret keys.
    secrets_by_service_account: BTreeMap<(Box<str>, Box<str>), BTreeSet<String>>,
}

/// The namespace of a namespaced key under `prefix` (`<prefix><namespace>/<name>`).
fn namespace_of<'k>(key: &'k str, prefix: &str) -> Option<&'k str> {
    key.strip_prefix(prefix)?.split_once('/').map(|(ns, _)| ns)
}

fn pod_node<'o>(key: &str, object: &'o CachedObject) -> Option<&'o str> {
    (key.starts_with(PODS_PREFIX))
        .then(|| object.node_name())
        .flatten()
        .filter(|n| !n.is_empty())
}

fn secret_owner<'k, 'o>(key: &'k str, object: &'o CachedObject) -> Option<(&'k str, &'o str)> {
    let namespace = namespace_of(key, SECRETS_PREFIX)?;
    let account = object.service_account_name().filter(|a| !a.is_empty())?;
    Some((namespace, account))
}

impl Indexes {
    /// Indexes built from a whole state (start and relist).
    pub(crate) fn build<'a>(
        objects: impl IntoIterator<Item = (&'a str, &'a std::sync::Arc<CachedObject>)>,
    ) -> Indexes {
        let mut indexes = Indexes::default();
        for (key, object) in objects {
            indexes.insert(key, object);
        }
        indexes
    }

    /// Records `object`, newly stored at `key`.
    pub(crate) fn insert(&mut self, key: &str, object: &CachedObject) {
        if let Some(node) = pod_node(key, object) {
            self.pods_by_node
                .entry(node.into())
                .or_default()
                .insert(key.to_string());
        }
        if let Some((namespace, account)) = secret_owner(key, object) {
            self.secrets_by_service_account
                .entry((namespace.into(), account.into()))
                .or_default()
                .insert(key.to_string());
        }
    }

    /// Forgets `object`, the state that was held at `key`.
    pub(crate) fn remove(&mut self, key: &str, object: &CachedObject) {
        if let Some(node) = pod_node(key, object)
            && let Some(keys) = self.pods_by_node.get_mut(node)
        {
            keys.remove(key);
            if keys.is_empty() {
                self.pods_by_node.remove(node);
            }
        }
        if let Some((namespace, account)) = secret_owner(key, object) {
            let owner = (Box::from(namespace), Box::from(account));
            if let Some(keys) = self.secrets_by_service_account.get_mut(&owner) {
                keys.remove(key);
                if keys.is_empty() {
                    self.secrets_by_service_account.remove(&owner);
                }
            }
        }
    }

    /// The keys of the pods bound to `node`, in key order.
    pub(crate) fn pods_on_node(&self, node: &str) -> impl Iterator<Item = &String> {
        self.pods_by_node.get(node).into_iter().flatten()
    }

    /// The keys of the Secrets in `namespace` annotated as belonging to `account`.
    pub(crate) fn secrets_of(&self, namespace: &str, account: &str) -> impl Iterator<Item = &String> {
        self.secrets_by_service_account
            .get(&(Box::from(namespace), Box::from(account)))
            .into_iter()
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use badge_api::resources;

    #[test]
    fn the_indexed_prefixes_are_where_pods_and_secrets_are_stored() {
        assert_eq!(resources::PODS.key_prefix(), PODS_PREFIX);
        assert_eq!(resources::SECRETS.key_prefix(), SECRETS_PREFIX);
    }
}
