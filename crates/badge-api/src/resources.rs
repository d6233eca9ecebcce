//! The resource table: every kind badge serves, with what routing, discovery, storage and
//! RBAC need to know about it. One row per resource; nothing else hard-codes a resource.

use schemars::{JsonSchema, Schema, SchemaGenerator};

/// How a resource is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Objects stored under `/registry/<plural>/...` (or `storage_prefix`).
    Stored,
    /// Create-only requests answered and never stored (reviews).
    Virtual,
}

/// A subresource (`serviceaccounts/token`).
#[derive(Debug)]
pub struct Subresource {
    /// The subresource's name (`token`, `status`).
    pub name: &'static str,
    /// The group of the kind it takes and answers, which may differ from the resource's.
    pub group: &'static str,
    /// The version of that kind.
    pub version: &'static str,
    /// The kind it takes and answers (`TokenRequest`).
    pub kind: &'static str,
    /// The verbs it serves.
    pub verbs: &'static [&'static str],
    /// The `$ref` schema of its kind, for OpenAPI.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a body to its typed form and back, dropping fields the kind does not have.
    pub roundtrip: fn(&serde_json::Value) -> Result<serde_json::Value, String>,
}

/// One resource type.
#[derive(Debug)]
pub struct Resource {
    /// The API group, "" for the core group.
    pub group: &'static str,
    /// The version served.
    pub version: &'static str,
    /// The kind of its objects.
    pub kind: &'static str,
    /// The plural name, as in URLs.
    pub plural: &'static str,
    /// The singular name, lowercase.
    pub singular: &'static str,
    /// Whether objects live in a namespace.
    pub namespaced: bool,
    /// The verbs served, as discovery lists them.
    pub verbs: &'static [&'static str],
    /// Short names kubectl accepts (`sa`).
    pub short_names: &'static [&'static str],
    /// Categories kubectl expands (`all`).
    pub categories: &'static [&'static str],
    /// Its subresources.
    pub subresources: &'static [Subresource],
    /// How objects are stored.
    pub storage: Storage,
    /// The `$ref` schema of the kind, for OpenAPI.
    pub schema: fn(&mut SchemaGenerator) -> Schema,
    /// Decodes a body into the real type and back: wrong types fail here, and fields the
    /// type does not know are missing from the result (see [`crate::decode`]).
    pub roundtrip: fn(&serde_json::Value) -> Result<serde_json::Value, String>,
}

impl Resource {
    /// `group/version`, or `v1` for the core group.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The kind of a list of these objects (`PodList`).
    pub fn list_kind(&self) -> String {
        format!("{}List", self.kind)
    }

    /// The group and resource, as errors name them.
    pub fn group_resource(&self) -> crate::status::GroupResource<'static> {
        crate::status::GroupResource {
            group: self.group,
            resource: self.plural,
        }
    }

    /// The store key prefix of all objects of this resource (ends in `/`).
    pub fn key_prefix(&self) -> String {
        format!("/registry/{}/", self.storage_name())
    }

    /// The store key prefix of the objects in one namespace.
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        format!("/registry/{}/{}/", self.storage_name(), namespace)
    }

    /// The store key of one object (`/registry/<resource>/<namespace>/<name>`).
    pub fn key(&self, namespace: &str, name: &str) -> String {
        // Joined rather than formatted: every token authentication looks objects up by key.
        if self.namespaced {
            ["/registry/", self.storage_name(), "/", namespace, "/", name].concat()
        } else {
            ["/registry/", self.storage_name(), "/", name].concat()
        }
    }

    /// Upstream keeps a few resources under other names (`clusterroles` as is; the RBAC
    /// and coordination groups keep their plural); core resources use the plural.
    fn storage_name(&self) -> &'static str {
        match self.plural {
            "nodes" => "minions",
            "leases" => "leases",
            other => other,
        }
    }

    /// Whether this is `other` (compare with the constants below: `r.is(PODS)`).
    pub fn is(&self, other: &Resource) -> bool {
        self.group == other.group && self.plural == other.plural
    }

    /// Whether the resource serves `verb`.
    pub fn allows(&self, verb: &str) -> bool {
        self.verbs.contains(&verb)
    }

    /// The subresource `name`, when served.
    pub fn subresource(&self, name: &str) -> Option<&'static Subresource> {
        self.subresources.iter().find(|s| s.name == name)
    }
}

/// The verbs of a stored, fully managed resource.
pub const STORED_VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];
/// Namespaces cannot be deletecollection'ed upstream.
const NAMESPACE_VERBS: &[&str] = &["create", "delete", "get", "list", "patch", "update", "watch"];
const CREATE_ONLY: &[&str] = &["create"];
/// Records the server keeps: clients read them, and may change only what the strategy lets
/// them (an IssuedToken's `spec.revoked`).
const RECORD_VERBS: &[&str] = &["get", "list", "patch", "update", "watch"];
const READ_ONLY_VERBS: &[&str] = &["get", "list", "watch"];

fn roundtrip_of<T: serde::de::DeserializeOwned + serde::Serialize>(
    value: &serde_json::Value,
) -> Result<serde_json::Value, String> {
    // Deserializing from a borrowed value spares a deep copy of every body; the error names
    // the field that failed (`spec.expirationSeconds: invalid type: ...`).
    let typed: T = serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        if path == "." {
            e.into_inner().to_string()
        } else {
            format!("{path}: {}", e.into_inner())
        }
    })?;
    serde_json::to_value(&typed).map_err(|e| e.to_string())
}

fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

use k8s_openapi::api::{
    authentication::v1 as authn, authorization::v1 as authz, certificates::v1 as certs,
    coordination::v1 as coord, core::v1 as core, rbac::v1 as rbac,
};

macro_rules! resource {
    ($group:expr, $version:expr, $kind:literal, $ty:ty, $plural:literal, $singular:literal, $namespaced:expr, $verbs:expr, $short:expr, $subs:expr, stored) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            verbs: $verbs,
            short_names: $short,
            categories: &[],
            subresources: $subs,
            storage: Storage::Stored,
            schema: schema_of::<$ty>,
            roundtrip: roundtrip_of::<$ty>,
        }
    };
    ($group:expr, $version:expr, $kind:literal, $ty:ty, $plural:literal, $singular:literal, $namespaced:expr, virtual) => {
        Resource {
            group: $group,
            version: $version,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            namespaced: $namespaced,
            verbs: CREATE_ONLY,
            short_names: &[],
            categories: &[],
            subresources: &[],
            storage: Storage::Virtual,
            schema: schema_of::<$ty>,
            roundtrip: roundtrip_of::<$ty>,
        }
    };
}

const RBAC: &str = "rbac.authorization.k8s.io";
const AUTHN: &str = "authentication.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";
const COORD: &str = "coordination.k8s.io";
const CERTS: &str = "certificates.k8s.io";
const IDENTITY: &str = crate::identity::GROUP;

const SERVICEACCOUNT_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "token",
    group: AUTHN,
    version: "v1",
    kind: "TokenRequest",
    verbs: CREATE_ONLY,
    schema: schema_of::<authn::TokenRequest>,
    roundtrip: roundtrip_of::<authn::TokenRequest>,
}];

const NAMESPACE_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        name: "finalize",
        group: "",
        version: "v1",
        kind: "Namespace",
        verbs: &["update"],
        schema: schema_of::<core::Namespace>,
        roundtrip: roundtrip_of::<core::Namespace>,
    },
    Subresource {
        name: "status",
        group: "",
        version: "v1",
        kind: "Namespace",
        verbs: &["get", "patch", "update"],
        schema: schema_of::<core::Namespace>,
        roundtrip: roundtrip_of::<core::Namespace>,
    },
];

const POD_SUBRESOURCES: &[Subresource] = &[Subresource {
    name: "status",
    group: "",
    version: "v1",
    kind: "Pod",
    verbs: &["get", "patch", "update"],
    schema: schema_of::<core::Pod>,
    roundtrip: roundtrip_of::<core::Pod>,
}];

/// `approval` changes only the Approved and Denied conditions, `status` the certificate
/// and the Failed condition.
const CSR_SUBRESOURCES: &[Subresource] = &[
    Subresource {
        name: "approval",
        group: CERTS,
        version: "v1",
        kind: "CertificateSigningRequest",
        verbs: &["get", "patch", "update"],
        schema: schema_of::<certs::CertificateSigningRequest>,
        roundtrip: roundtrip_of::<certs::CertificateSigningRequest>,
    },
    Subresource {
        name: "status",
        group: CERTS,
        version: "v1",
        kind: "CertificateSigningRequest",
        verbs: &["get", "patch", "update"],
        schema: schema_of::<certs::CertificateSigningRequest>,
        roundtrip: roundtrip_of::<certs::CertificateSigningRequest>,
    },
];

/// Every resource badge serves, in discovery order.
pub static RESOURCES: &[Resource] = TABLE;

const TABLE: &[Resource] = &[
    resource!(
        "",
        "v1",
        "ConfigMap",
        core::ConfigMap,
        "configmaps",
        "configmap",
        true,
        STORED_VERBS,
        &["cm"],
        &[],
        stored
    ),
    resource!(
        "",
        "v1",
        "Event",
        core::Event,
        "events",
        "event",
        true,
        STORED_VERBS,
        &["ev"],
        &[],
        stored
    ),
    resource!(
        "",
        "v1",
        "Namespace",
        core::Namespace,
        "namespaces",
        "namespace",
        false,
        NAMESPACE_VERBS,
        &["ns"],
        NAMESPACE_SUBRESOURCES,
        stored
    ),
    resource!(
        "",
        "v1",
        "Node",
        core::Node,
        "nodes",
        "node",
        false,
        STORED_VERBS,
        &["no"],
        &[],
        stored
    ),
    resource!(
        "",
        "v1",
        "Pod",
        core::Pod,
        "pods",
        "pod",
        true,
        STORED_VERBS,
        &["po"],
        POD_SUBRESOURCES,
        stored
    ),
    resource!(
        "",
        "v1",
        "Secret",
        core::Secret,
        "secrets",
        "secret",
        true,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        "",
        "v1",
        "ServiceAccount",
        core::ServiceAccount,
        "serviceaccounts",
        "serviceaccount",
        true,
        STORED_VERBS,
        &["sa"],
        SERVICEACCOUNT_SUBRESOURCES,
        stored
    ),
    resource!(
        AUTHN,
        "v1",
        "SelfSubjectReview",
        authn::SelfSubjectReview,
        "selfsubjectreviews",
        "selfsubjectreview",
        false,
        virtual
    ),
    resource!(
        AUTHN,
        "v1",
        "TokenReview",
        authn::TokenReview,
        "tokenreviews",
        "tokenreview",
        false,
        virtual
    ),
    resource!(
        AUTHZ,
        "v1",
        "LocalSubjectAccessReview",
        authz::LocalSubjectAccessReview,
        "localsubjectaccessreviews",
        "localsubjectaccessreview",
        true,
        virtual
    ),
    resource!(
        AUTHZ,
        "v1",
        "SelfSubjectAccessReview",
        authz::SelfSubjectAccessReview,
        "selfsubjectaccessreviews",
        "selfsubjectaccessreview",
        false,
        virtual
    ),
    resource!(
        AUTHZ,
        "v1",
        "SelfSubjectRulesReview",
        authz::SelfSubjectRulesReview,
        "selfsubjectrulesreviews",
        "selfsubjectrulesreview",
        false,
        virtual
    ),
    resource!(
        AUTHZ,
        "v1",
        "SubjectAccessReview",
        authz::SubjectAccessReview,
        "subjectaccessreviews",
        "subjectaccessreview",
        false,
        virtual
    ),
    resource!(
        CERTS,
        "v1",
        "CertificateSigningRequest",
        certs::CertificateSigningRequest,
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        STORED_VERBS,
        &["csr"],
        CSR_SUBRESOURCES,
        stored
    ),
    resource!(
        COORD,
        "v1",
        "Lease",
        coord::Lease,
        "leases",
        "lease",
        true,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        IDENTITY,
        "v1",
        "IssuedToken",
        crate::identity::IssuedToken,
        "issuedtokens",
        "issuedtoken",
        true,
        RECORD_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        IDENTITY,
        "v1",
        "ServiceAccountUsage",
        crate::identity::ServiceAccountUsage,
        "serviceaccountusages",
        "serviceaccountusage",
        true,
        READ_ONLY_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        IDENTITY,
        "v1",
        "TokenPolicy",
        crate::tokenpolicy::TokenPolicy,
        "tokenpolicies",
        "tokenpolicy",
        true,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        RBAC,
        "v1",
        "ClusterRoleBinding",
        rbac::ClusterRoleBinding,
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        RBAC,
        "v1",
        "ClusterRole",
        rbac::ClusterRole,
        "clusterroles",
        "clusterrole",
        false,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        RBAC,
        "v1",
        "RoleBinding",
        rbac::RoleBinding,
        "rolebindings",
        "rolebinding",
        true,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
    resource!(
        RBAC,
        "v1",
        "Role",
        rbac::Role,
        "roles",
        "role",
        true,
        STORED_VERBS,
        &[],
        &[],
        stored
    ),
];

/// The row of `group`/`plural` in the table, found when the crate compiles: a constant
/// below that names a resource the table lacks fails the build rather than a request.
const fn row(group: &str, plural: &str) -> usize {
    const fn same(a: &str, b: &str) -> bool {
        let (a, b) = (a.as_bytes(), b.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let mut i = 0;
        while i < a.len() {
            if a[i] != b[i] {
                return false;
            }
            i += 1;
        }
        true
    }
    let mut i = 0;
    while i < TABLE.len() {
        if same(TABLE[i].group, group) && same(TABLE[i].plural, plural) {
            return i;
        }
        i += 1;
    }
    panic!("a resource constant names a row the table lacks")
}

/// `v1` ConfigMaps.
pub static CONFIGMAPS: &Resource = &RESOURCES[row("", "configmaps")];
/// `v1` Events.
pub static EVENTS: &Resource = &RESOURCES[row("", "events")];
/// `v1` Namespaces.
pub static NAMESPACES: &Resource = &RESOURCES[row("", "namespaces")];
/// `v1` Nodes.
pub static NODES: &Resource = &RESOURCES[row("", "nodes")];
/// `v1` Pods.
pub static PODS: &Resource = &RESOURCES[row("", "pods")];
/// `v1` Secrets.
pub static SECRETS: &Resource = &RESOURCES[row("", "secrets")];
/// `v1` ServiceAccounts.
pub static SERVICEACCOUNTS: &Resource = &RESOURCES[row("", "serviceaccounts")];
/// `authentication.k8s.io` TokenReviews.
pub static TOKENREVIEWS: &Resource = &RESOURCES[row(AUTHN, "tokenreviews")];
/// `authorization.k8s.io` SubjectAccessReviews.
pub static SUBJECTACCESSREVIEWS: &Resource = &RESOURCES[row(AUTHZ, "subjectaccessreviews")];
/// `certificates.k8s.io` CertificateSigningRequests.
pub static CERTIFICATESIGNINGREQUESTS: &Resource = &RESOURCES[row(CERTS, "certificatesigningrequests")];
/// `coordination.k8s.io` Leases.
pub static LEASES: &Resource = &RESOURCES[row(COORD, "leases")];
/// `identity.badge.dev` IssuedTokens.
pub static ISSUEDTOKENS: &Resource = &RESOURCES[row(IDENTITY, "issuedtokens")];
/// `identity.badge.dev` ServiceAccountUsages.
pub static SERVICEACCOUNTUSAGES: &Resource = &RESOURCES[row(IDENTITY, "serviceaccountusages")];
/// `identity.badge.dev` TokenPolicies.
pub static TOKENPOLICIES: &Resource = &RESOURCES[row(IDENTITY, "tokenpolicies")];
/// `rbac.authorization.k8s.io` ClusterRoleBindings.
pub static CLUSTERROLEBINDINGS: &Resource = &RESOURCES[row(RBAC, "clusterrolebindings")];
/// `rbac.authorization.k8s.io` ClusterRoles.
pub static CLUSTERROLES: &Resource = &RESOURCES[row(RBAC, "clusterroles")];
/// `rbac.authorization.k8s.io` RoleBindings.
pub static ROLEBINDINGS: &Resource = &RESOURCES[row(RBAC, "rolebindings")];
/// `rbac.authorization.k8s.io` Roles.
pub static ROLES: &Resource = &RESOURCES[row(RBAC, "roles")];

/// The API groups badge serves, in discovery order (the core group is "").
pub const GROUPS: &[&str] = &["", AUTHN, AUTHZ, CERTS, COORD, IDENTITY, RBAC];

/// The resource a group, version and plural name.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    // Every request looks its resource up: the plural comes first because it tells most
    // entries apart by length alone, while most groups and versions are equal strings that
    // would each cost a full comparison.
    RESOURCES
        .iter()
        .find(|r| r.plural == plural && r.version == version && r.group == group)
}

/// The resource of a kind in a group (any version).
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES.iter().find(|r| r.group == group && r.kind == kind)
}

/// Whether a group and version is served.
pub fn serves_version(group: &str, version: &str) -> bool {
    RESOURCES.iter().any(|r| r.group == group && r.version == version)
}

/// The versions served for a group, preferred first.
pub fn versions_of(group: &str) -> Vec<&'static str> {
    let mut versions: Vec<&'static str> = Vec::new();
    for r in RESOURCES.iter().filter(|r| r.group == group) {
        if !versions.contains(&r.version) {
            versions.push(r.version);
        }
    }
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_upstream_layout() {
        let sa = lookup("", "v1", "serviceaccounts").map(|r| r.key("demo", "x"));
        assert_eq!(sa.as_deref(), Some("/registry/serviceaccounts/demo/x"));
        let ns = lookup("", "v1", "namespaces").map(|r| r.key("", "demo"));
        assert_eq!(ns.as_deref(), Some("/registry/namespaces/demo"));
        let node = lookup("", "v1", "nodes").map(|r| r.key("", "n1"));
        assert_eq!(node.as_deref(), Some("/registry/minions/n1"));
    }

    #[test]
    fn every_resource_is_unique_and_has_a_known_group() {
        for (i, a) in RESOURCES.iter().enumerate() {
            assert!(GROUPS.contains(&a.group), "{} has an unlisted group", a.plural);
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} twice",
                    a.plural
                );
            }
        }
    }

    #[test]
    fn constants_are_the_rows_lookup_finds() {
        for constant in [
            CONFIGMAPS,
            EVENTS,
            NAMESPACES,
            NODES,
            PODS,
            SECRETS,
            SERVICEACCOUNTS,
            TOKENREVIEWS,
            SUBJECTACCESSREVIEWS,
            CERTIFICATESIGNINGREQUESTS,
            LEASES,
            ISSUEDTOKENS,
            SERVICEACCOUNTUSAGES,
            TOKENPOLICIES,
            CLUSTERROLEBINDINGS,
            CLUSTERROLES,
            ROLEBINDINGS,
            ROLES,
        ] {
            let found = lookup(constant.group, constant.version, constant.plural);
            assert!(
                found.is_some_and(|r| std::ptr::eq(r, constant)),
                "{}",
                constant.plural
            );
        }
        assert_eq!((PODS.group, PODS.plural, PODS.kind), ("", "pods", "Pod"));
        assert_eq!((ROLES.group, ROLES.kind), (RBAC, "Role"));
    }

    #[test]
    fn token_is_a_subresource_of_serviceaccounts() {
        let sa = lookup("", "v1", "serviceaccounts");
        let token = sa.and_then(|r| r.subresource("token"));
        assert_eq!(token.map(|t| t.kind), Some("TokenRequest"));
    }
}
