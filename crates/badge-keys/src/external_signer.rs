//! Upstream's `v1.ExternalJWTSigner` gRPC API (`k8s.io/externaljwt/apis/v1`) over a unix
//! socket, so a kube-apiserver started with `--service-account-signing-endpoint` signs its
//! ServiceAccount tokens with this ring's keys and verifies them with its published keys.
//! The messages are declared by hand with upstream's wire tags, as the KMS plugin's are.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::net::UnixListener;
use tonic::Status;

use crate::ServiceAccountKeys;

/// gRPC method path of `ExternalJWTSigner.Sign`.
pub const SIGN_PATH: &str = "/v1.ExternalJWTSigner/Sign";
/// gRPC method path of `ExternalJWTSigner.FetchKeys`.
pub const FETCH_KEYS_PATH: &str = "/v1.ExternalJWTSigner/FetchKeys";
/// gRPC method path of `ExternalJWTSigner.Metadata`.
pub const METADATA_PATH: &str = "/v1.ExternalJWTSigner/Metadata";

#[derive(Clone, PartialEq, prost::Message)]
/// `SignJWTRequest`: the claims kube-apiserver wants signed.
pub struct SignJwtRequest {
    /// The payload, base64url as the second segment of the token.
    #[prost(string, tag = "1")]
    pub claims: String,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `SignJWTResponse`: the token's header and signature segments.
pub struct SignJwtResponse {
    #[prost(string, tag = "1")]
    /// The JOSE header, base64url as the token's first segment.
    pub header: String,
    #[prost(string, tag = "2")]
    /// The signature, base64url as the token's third segment.
    pub signature: String,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `FetchKeysRequest`: no fields.
pub struct FetchKeysRequest {}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    /// Seconds since the Unix epoch.
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    /// Nanoseconds within that second.
    pub nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `FetchKeysResponse`: the public keys tokens may be verified with.
pub struct FetchKeysResponse {
    #[prost(message, repeated, tag = "1")]
    /// Every key that may have signed a still-valid token.
    pub keys: Vec<Key>,
    #[prost(message, optional, tag = "2")]
    /// When the key set last changed.
    pub data_timestamp: Option<Timestamp>,
    #[prost(int64, tag = "3")]
    /// How many seconds kube-apiserver should wait before fetching the keys again.
    pub refresh_hint_seconds: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
/// One public key.
pub struct Key {
    #[prost(string, tag = "1")]
    /// The `kid` the header of tokens it signs carries.
    pub key_id: String,
    /// PKIX (SubjectPublicKeyInfo) DER.
    #[prost(bytes = "vec", tag = "2")]
    pub key: Vec<u8>,
    #[prost(bool, tag = "3")]
    /// Whether the key is left out of the OIDC JWKS (kept for verification only).
    pub exclude_from_oidc_discovery: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
/// `MetadataRequest`: no fields.
pub struct MetadataRequest {}

#[derive(Clone, PartialEq, prost::Message)]
/// `MetadataResponse`: what the signer supports.
pub struct MetadataResponse {
    #[prost(int64, tag = "1")]
    /// The longest token lifetime the signer issues, in seconds.
    pub max_token_expiration_seconds: i64,
}

/// How often kube-apiserver is told to fetch the keys at most; sooner when the key set
/// changes on its own before then.
const REFRESH_HINT_SECONDS: i64 = 60;
/// Upstream refuses a maximum below ten minutes.
const MIN_MAX_TOKEN_EXPIRATION: i64 = 600;

/// The signer's answers, over the keys a server (or `badge signer`) follows.
pub struct ExternalSigner {
    keys: Arc<ServiceAccountKeys>,
    max_token_expiration_seconds: i64,
    /// When keys from files (no ring) were read: they never change after.
    started: i64,
}

fn grpc_status(status: badge_api::Status) -> Status {
    match status.code {
        503 => Status::unavailable(status.message),
        400 | 422 => Status::invalid_argument(status.message),
        _ => Status::internal(status.message),
    }
}

impl ExternalSigner {
    /// A signer over `keys`, capping token lifetimes at `max_token_expiration_seconds` (raised to upstream's minimum).
    pub fn new(keys: Arc<ServiceAccountKeys>, max_token_expiration_seconds: i64) -> ExternalSigner {
        ExternalSigner {
            keys,
            max_token_expiration_seconds: max_token_expiration_seconds.max(MIN_MAX_TOKEN_EXPIRATION),
            started: crate::now(),
        }
    }

    /// Signs `base64url(header) + "." + claims` with the current key; the claims are used as
    /// given, but must be base64url of a JSON object.
    pub fn sign(&self, request: &SignJwtRequest) -> Result<SignJwtResponse, Status> {
        let payload = URL_SAFE_NO_PAD
            .decode(request.claims.as_bytes())
            .map_err(|_| Status::invalid_argument("claims are not unpadded base64url"))?;
        if !matches!(
            serde_json::from_slice::<serde_json::Value>(&payload),
            Ok(serde_json::Value::Object(_))
        ) {
            return Err(Status::invalid_argument("claims are not a JSON object"));
        }
        let signer = self.keys.checked_signer().map_err(grpc_status)?;
        let header = serde_json::json!({
            "alg": signer.algorithm().as_str(),
            "kid": signer.kid(),
            "typ": "JWT",
        });
        let header = URL_SAFE_NO_PAD.encode(header.to_string());
        let signing_input = format!("{header}.{}", request.claims);
        let signature = signer
            .sign(signing_input.as_bytes())
            .map_err(|e| Status::internal(format!("signing: {e}")))?;
        Ok(SignJwtResponse {
            header,
            signature: URL_SAFE_NO_PAD.encode(signature),
        })
    }

    /// Every key that verifies now, the staged next key included (it is in the set from the
    /// moment it is published, ahead of signing).
    pub fn fetch_keys(&self) -> Result<FetchKeysResponse, Status> {
        let snapshot = self.keys.current();
        let keys: Vec<Key> = snapshot
            .keys()
            .iter()
            .map(|k| Key {
                key_id: k.kid().to_string(),
                key: k.spki_der().to_vec(),
                exclude_from_oidc_discovery: false,
            })
            .collect();
        if keys.is_empty() {
            return Err(Status::unavailable("no verification keys"));
        }
        let now = crate::now();
        let data_timestamp = snapshot.ring().map_or(self.started, |(_, at)| at);
        let refresh_hint_seconds = match self.keys.next_change() {
            Some(at) => (at - now).clamp(1, REFRESH_HINT_SECONDS),
            None => REFRESH_HINT_SECONDS,
        };
        Ok(FetchKeysResponse {
            keys,
            data_timestamp: Some(Timestamp {
                seconds: data_timestamp,
                nanos: 0,
            }),
            refresh_hint_seconds,
        })
    }

    /// The answer to `Metadata`.
    pub fn metadata(&self) -> MetadataResponse {
        MetadataResponse {
            max_token_expiration_seconds: self.max_token_expiration_seconds,
        }
    }
}

/// Binds the socket at `path` (a stale one is replaced), usable by its owner only.
pub fn bind(path: &Path) -> std::io::Result<UnixListener> {
    badge_grpc::bind(path, "jwt-signer")
}

async fn handle(signer: Arc<ExternalSigner>, request: badge_grpc::HttpRequest) -> badge_grpc::HttpResponse {
    match request.uri().path() {
        SIGN_PATH => {
            badge_grpc::unary(request, move |r: SignJwtRequest| async move { signer.sign(&r) }).await
        }
        FETCH_KEYS_PATH => {
            badge_grpc::unary(
                request,
                move |_: FetchKeysRequest| async move { signer.fetch_keys() },
            )
            .await
        }
        METADATA_PATH => {
            badge_grpc::unary(
                request,
                move |_: MetadataRequest| async move { Ok(signer.metadata()) },
            )
            .await
        }
        other => badge_grpc::unimplemented(other),
    }
}

/// Serves the signer API on `listener` until `shutdown` completes.
pub async fn serve(
    listener: UnixListener,
    signer: Arc<ExternalSigner>,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    badge_grpc::serve(
        listener,
        move |request| handle(signer.clone(), request),
        shutdown,
        "external signer",
    )
    .await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{KeyType, StoredRing};
    use badge_token::KeySet;
    use prost::Message;

    async fn signer_over(dir: &Path) -> ExternalSigner {
        let store: Arc<dyn badge_store::Store> =
            Arc::new(badge_store::sqlite::SqliteStore::open(&dir.join("s.db")).unwrap());
        let keys = ServiceAccountKeys::load(
            store,
            StoredRing::new(&[7; 32]),
            KeyType::Es256,
            None,
            None,
            Vec::new(),
            3660,
        )
        .await
        .unwrap();
        ExternalSigner::new(keys, 60)
    }

    fn payload() -> String {
        URL_SAFE_NO_PAD.encode(br#"{"sub":"system:serviceaccount:default:robot"}"#)
    }

    /// Assembles the token as kube-apiserver does and verifies it with the fetched keys.
    fn verifies_with(signed: &SignJwtResponse, claims: &str, fetched: &FetchKeysResponse) -> String {
        let keys = fetched
            .keys
            .iter()
            .map(|k| badge_token::VerifyingKey::from_spki_der(&k.key).unwrap());
        let token = format!("{}.{claims}.{}", signed.header, signed.signature);
        let verified = badge_token::jwt::parse_and_verify(&token, &KeySet::new(None, keys)).unwrap();
        verified.kid().to_string()
    }

    #[tokio::test]
    async fn the_next_key_is_fetched_before_it_signs() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer_over(dir.path()).await;
        // Upstream refuses less than ten minutes.
        assert_eq!(signer.metadata().max_token_expiration_seconds, 600);
        let claims = payload();
        let before = signer.fetch_keys().unwrap();
        let signed = signer
            .sign(&SignJwtRequest {
                claims: claims.clone(),
            })
            .unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(&signed.header).unwrap()).unwrap();
        let first = verifies_with(&signed, &claims, &before);
        assert_eq!(
            header,
            serde_json::json!({"alg": "ES256", "kid": first, "typ": "JWT"})
        );

        let next = signer.keys.rotate(30).await.unwrap();
        let staged = signer.fetch_keys().unwrap();
        let kids: Vec<&str> = staged.keys.iter().map(|k| k.key_id.as_str()).collect();
        assert!(
            kids.contains(&next.as_str()) && kids.contains(&first.as_str()),
            "{kids:?}"
        );
        // Fetched again no later than the staged key starts signing.
        assert!(
            (1..=30).contains(&staged.refresh_hint_seconds),
            "{}",
            staged.refresh_hint_seconds
        );
        // Until then the current key signs.
        let signed = signer
            .sign(&SignJwtRequest {
                claims: claims.clone(),
            })
            .unwrap();
        assert_eq!(verifies_with(&signed, &claims, &staged), first);
    }

    #[tokio::test]
    async fn claims_must_be_base64url_json_objects() {
        let dir = tempfile::tempdir().unwrap();
        let signer = signer_over(dir.path()).await;
        for claims in [
            "not base64!".to_string(),
            URL_SAFE_NO_PAD.encode("[1]"),
            String::new(),
        ] {
            let refused = signer.sign(&SignJwtRequest { claims }).unwrap_err();
            assert_eq!(refused.code(), tonic::Code::InvalidArgument);
        }
    }

    #[test]
    fn messages_use_upstream_tags() {
        let response = FetchKeysResponse {
            keys: vec![Key {
                key_id: "k".into(),
                key: vec![7],
                exclude_from_oidc_discovery: true,
            }],
            data_timestamp: Some(Timestamp { seconds: 2, nanos: 0 }),
            refresh_hint_seconds: 60,
        };
        // keys: field 1 message (key_id 1, key 2, exclude 3); timestamp 2; hint 3 varint.
        assert_eq!(
            response.encode_to_vec(),
            [
                0x0a, 8, 0x0a, 1, b'k', 0x12, 1, 7, 0x18, 1, 0x12, 2, 0x08, 2, 0x18, 60
            ]
        );
        let signed = SignJwtResponse {
            header: "h".into(),
            signature: "s".into(),
        };
        assert_eq!(signed.encode_to_vec(), [0x0a, 1, b'h', 0x12, 1, b's']);
        let metadata = MetadataResponse {
            max_token_expiration_seconds: 600,
        };
        assert_eq!(metadata.encode_to_vec(), [0x08, 0xd8, 0x04]);
    }
}
