//! The strategic-merge metadata of the kinds badge serves: the `patchStrategy` and
//! `patchMergeKey` struct tags of k8s.io/api v0.35 and k8s.io/apimachinery's ObjectMeta.
//! Lists not named here have no tag upstream and are replaced whole (RBAC `rules` and
//! `subjects`, ServiceAccount `imagePullSecrets`, Namespace `spec.finalizers`, Pod
//! `tolerations`, container `envFrom` and others).

use super::strategic::{ListStrategy, MergeSchema};

/// One tagged list field, by its dotted path of field names.
#[derive(Debug)]
struct Field {
    path: &'static str,
    strategy: ListStrategy<'static>,
    retain_keys: bool,
}

const fn by_key(path: &'static str, key: &'static str) -> Field {
    Field {
        path,
        strategy: ListStrategy::MergeByKey(key),
        retain_keys: false,
    }
}

const fn by_key_retaining(path: &'static str, key: &'static str) -> Field {
    Field {
        path,
        strategy: ListStrategy::MergeByKey(key),
        retain_keys: true,
    }
}

const fn primitives(path: &'static str) -> Field {
    Field {
        path,
        strategy: ListStrategy::MergePrimitives,
        retain_keys: false,
    }
}

/// The merge metadata of one kind; see [`CoreSchema::for_kind`].
#[derive(Debug)]
pub struct CoreSchema {
    kind: &'static str,
    fields: &'static [Field],
}

/// ObjectMeta, part of every kind.
const METADATA: &[Field] = &[
    primitives("metadata.finalizers"),
    by_key("metadata.ownerReferences", "uid"),
];

/// `$fields`, then the tagged lists of a Container (and EphemeralContainer) under each
/// of the `$list` fields.
macro_rules! with_container_fields {
    ([$($field:expr),* $(,)?], [$($list:literal),* $(,)?]) => {
        &[
            $($field,)*
            $(
                by_key(concat!($list, ".ports"), "containerPort"),
                by_key(concat!($list, ".env"), "name"),
                by_key(concat!($list, ".volumeMounts"), "mountPath"),
                by_key(concat!($list, ".volumeDevices"), "devicePath"),
            )*
        ]
    };
}

const POD: &[Field] = with_container_fields!(
    [
        by_key_retaining("spec.volumes", "name"),
        by_key("spec.initContainers", "name"),
        by_key("spec.containers", "name"),
        by_key("spec.ephemeralContainers", "name"),
        by_key("spec.imagePullSecrets", "name"),
        by_key("spec.hostAliases", "ip"),
        by_key("spec.topologySpreadConstraints", "topologyKey"),
        by_key("spec.schedulingGates", "name"),
        by_key_retaining("spec.resourceClaims", "name"),
        by_key("status.conditions", "type"),
        by_key("status.hostIPs", "ip"),
        by_key("status.podIPs", "ip"),
        by_key_retaining("status.resourceClaimStatuses", "name"),
    ],
    [
        "spec.initContainers",
        "spec.containers",
        "spec.ephemeralContainers"
    ]
);

const NODE: &[Field] = &[
    primitives("spec.podCIDRs"),
    by_key("status.conditions", "type"),
    by_key("status.addresses", "type"),
];

const NAMESPACE: &[Field] = &[by_key("status.conditions", "type")];

const SERVICE_ACCOUNT: &[Field] = &[by_key("secrets", "name")];

/// Every patchable kind badge serves. Kinds with only ObjectMeta tags have no fields.
static SCHEMAS: &[CoreSchema] = &[
    CoreSchema {
        kind: "ConfigMap",
        fields: &[],
    },
    CoreSchema {
        kind: "Event",
        fields: &[],
    },
    CoreSchema {
        kind: "Namespace",
        fields: NAMESPACE,
    },
    CoreSchema {
        kind: "Node",
        fields: NODE,
    },
    CoreSchema {
        kind: "Pod",
        fields: POD,
    },
    CoreSchema {
        kind: "Secret",
        fields: &[],
    },
    CoreSchema {
        kind: "ServiceAccount",
        fields: SERVICE_ACCOUNT,
    },
    CoreSchema {
        kind: "CertificateSigningRequest",
        fields: &[],
    },
    CoreSchema {
        kind: "Lease",
        fields: &[],
    },
    // badge's own kinds: no tagged lists (`spec.audiences` is replaced whole).
    CoreSchema {
        kind: "IssuedToken",
        fields: &[],
    },
    CoreSchema {
        kind: "TokenPolicy",
        fields: &[],
    },
    CoreSchema {
        kind: "ClusterRoleBinding",
        fields: &[],
    },
    CoreSchema {
        kind: "ClusterRole",
        fields: &[],
    },
    CoreSchema {
        kind: "RoleBinding",
        fields: &[],
    },
    CoreSchema {
        kind: "Role",
        fields: &[],
    },
];

impl CoreSchema {
    /// The schema of `kind` (`"Pod"`), or `None` for a kind badge does not patch.
    pub fn for_kind(kind: &str) -> Option<&'static CoreSchema> {
        SCHEMAS.iter().find(|s| s.kind == kind)
    }

    /// The kind this schema describes.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    fn field(&self, path: &[&str]) -> Option<&'static Field> {
        METADATA
            .iter()
            .chain(self.fields)
            .find(|f| f.path.split('.').eq(path.iter().copied()))
    }
}

impl MergeSchema for CoreSchema {
    fn list_strategy(&self, path: &[&str]) -> ListStrategy<'_> {
        self.field(path).map_or(ListStrategy::Replace, |f| f.strategy)
    }

    fn retain_keys(&self, path: &[&str]) -> bool {
        self.field(path).is_some_and(|f| f.retain_keys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strategy(kind: &str, path: &str) -> ListStrategy<'static> {
        let Some(schema) = CoreSchema::for_kind(kind) else {
            panic!("no schema for {kind}");
        };
        let path: Vec<&str> = path.split('.').collect();
        schema.list_strategy(&path)
    }

    #[test]
    fn tags_match_upstream() {
        use ListStrategy::*;
        let cases = [
            ("Pod", "metadata.finalizers", MergePrimitives),
            ("Secret", "metadata.ownerReferences", MergeByKey("uid")),
            ("Pod", "metadata.managedFields", Replace),
            ("Pod", "spec.containers", MergeByKey("name")),
            ("Pod", "spec.initContainers.env", MergeByKey("name")),
            (
                "Pod",
                "spec.ephemeralContainers.volumeMounts",
                MergeByKey("mountPath"),
            ),
            ("Pod", "spec.containers.ports", MergeByKey("containerPort")),
            ("Pod", "spec.containers.envFrom", Replace),
            ("Pod", "spec.containers.args", Replace),
            ("Pod", "spec.tolerations", Replace),
            ("Pod", "spec.volumes", MergeByKey("name")),
            ("Pod", "status.conditions", MergeByKey("type")),
            ("Pod", "status.containerStatuses", Replace),
            ("ServiceAccount", "secrets", MergeByKey("name")),
            ("ServiceAccount", "imagePullSecrets", Replace),
            ("Namespace", "spec.finalizers", Replace),
            ("Namespace", "status.conditions", MergeByKey("type")),
            ("Node", "status.addresses", MergeByKey("type")),
            ("Node", "spec.podCIDRs", MergePrimitives),
            ("Node", "spec.taints", Replace),
            ("Role", "rules", Replace),
            ("ClusterRoleBinding", "subjects", Replace),
            ("ConfigMap", "spec.containers", Replace),
        ];
        for (kind, path, want) in cases {
            assert_eq!(strategy(kind, path), want, "{kind} {path}");
        }
        let pod = CoreSchema::for_kind("Pod").map(|s| s.retain_keys(&["spec", "volumes"]));
        assert_eq!(pod, Some(true));
        let pod = CoreSchema::for_kind("Pod").map(|s| s.retain_keys(&["spec", "containers"]));
        assert_eq!(pod, Some(false));
    }

    #[test]
    fn every_patchable_resource_has_a_schema() {
        for resource in crate::RESOURCES {
            if resource.verbs.contains(&"patch") {
                assert!(
                    CoreSchema::for_kind(resource.kind).is_some(),
                    "{} has no strategic merge schema",
                    resource.kind
                );
            }
            for sub in resource.subresources {
                if sub.verbs.contains(&"patch") {
                    assert!(CoreSchema::for_kind(sub.kind).is_some(), "{}", sub.kind);
                }
            }
        }
        assert!(CoreSchema::for_kind("Widget").is_none());
    }
}
