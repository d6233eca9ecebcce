//! The compact form of the JSON the watch cache holds. Every object of a kind repeats the
//! same field names and many of the same values (`"creationTimestamp":"`,
//! `"serviceAccountUID":"`, `"identity.badge.dev/token-kind":"bound"}`): in a small object
//! such as an IssuedToken record they are half its bytes, and the cache holds every object.
//! Each such phrase is written as two bytes: a byte valid JSON never holds (a control
//! character) and the phrase's index. Unpacking puts the phrases back, byte for byte.
//!
//! Every phrase starts and ends with a JSON punctuation byte, so a text without punctuation
//! (a label key) is found either among the bytes left as they were or within one phrase,
//! never straddling both ([`mentions`]).

use std::borrow::Cow;
use std::sync::LazyLock;

/// The first byte of a packed phrase: a control character, which JSON text never contains
/// (not even inside a string, where it must be escaped).
const MARK: u8 = 0x01;

/// The bytes every phrase starts and ends with.
const PUNCTUATION: &[u8] = b"\"{}[]:,";

/// Recurring phrases as serde_json writes objects (keys in sorted order, no spaces), the
/// longest first where one begins another. At most 256.
static PHRASES: &[&str] = &[
    // Objects' openings, up to the kind.
    r#"{"apiVersion":"identity.badge.dev/v1","kind":""#,
    r#"{"apiVersion":"rbac.authorization.k8s.io/v1","kind":""#,
    r#"{"apiVersion":"coordination.k8s.io/v1","kind":""#,
    r#"{"apiVersion":"certificates.k8s.io/v1","kind":""#,
    r#"{"apiVersion":"v1","kind":""#,
    r#"{"apiVersion":"v1","data":{"#,
    r#"{"apiVersion":""#,
    // Kinds, up to their metadata.
    r#""IssuedToken","metadata":{"#,
    r#""ServiceAccountUsage","metadata":{"#,
    r#""ServiceAccount","metadata":{"#,
    r#""Secret","metadata":{"#,
    r#""Pod","metadata":{"#,
    r#""Node","metadata":{"#,
    r#""Namespace","metadata":{"#,
    r#""ConfigMap","metadata":{"#,
    r#""Role","metadata":{"#,
    r#""ClusterRole","metadata":{"#,
    r#""RoleBinding","metadata":{"#,
    r#""ClusterRoleBinding","metadata":{"#,
    r#""Lease","metadata":{"#,
    r#""CertificateSigningRequest","metadata":{"#,
    r#""kind":"Secret","metadata":{"#,
    r#""kind":""#,
    r#""metadata":{"#,
    // Metadata.
    r#""annotations":{"#,
    r#""creationTimestamp":""#,
    r#""deletionGracePeriodSeconds":"#,
    r#""deletionTimestamp":""#,
    r#""finalizers":["#,
    r#""generateName":""#,
    r#""generation":"#,
    r#""labels":{"identity.badge.dev/service-account":""#,
    r#""labels":{"#,
    r#""managedFields":["#,
    r#""name":""#,
    r#""namespace":""#,
    r#""ownerReferences":[{"#,
    r#""resourceVersion":""#,
    r#""uid":""#,
    r#""kubernetes.io/metadata.name":""#,
    // identity.badge.dev.
    r#""identity.badge.dev/service-account":""#,
    r#""identity.badge.dev/token-kind":"bound"}"#,
    r#""identity.badge.dev/token-kind":"legacy"}"#,
    r#""identity.badge.dev/token-kind":""#,
    r#""spec":{"audiences":["https://kubernetes.default.svc.cluster.local"],"#,
    r#""spec":{"audiences":[""#,
    r#""audiences":[""#,
    r#""https://kubernetes.default.svc.cluster.local""#,
    r#""boundObjectRef":{"kind":"Pod","name":""#,
    r#""boundObjectRef":{"kind":""#,
    r#""expiresAt":""#,
    r#""issuedAt":""#,
    r#""keyID":""#,
    r#""requester":{"username":"system:serviceaccount:"#,
    r#""requester":{"username":"system:node:"#,
    r#""requester":{"username":""#,
    r#""revoked":"#,
    r#""serviceAccountName":""#,
    r#""serviceAccountUID":""#,
    r#""status":{"lastUsed":{"sourceAddress":""#,
    r#""lastUsed":{"sourceAddress":""#,
    r#""sourceAddress":""#,
    r#""time":""#,
    r#""userAgent":""#,
    r#""useCount":"#,
    r#""suspicious":{"message":""#,
    r#""status":{"lastAuthenticated":{"credentialID":""#,
    r#""lastAuthenticated":{"credentialID":""#,
    r#""lastTokenIssued":""#,
    r#""liveTokens":"#,
    // Core kinds.
    r#""kubernetes.io/service-account.name":""#,
    r#""kubernetes.io/service-account.uid":""#,
    r#""type":"kubernetes.io/service-account-token"}"#,
    r#""automountServiceAccountToken":"#,
    r#""imagePullSecrets":[{"name":""#,
    r#""secrets":[{"name":""#,
    r#""containers":[{"#,
    r#""image":""#,
    r#""nodeName":""#,
    r#""serviceAccount":""#,
    r#""phase":""#,
    r#""conditions":[{"#,
    r#""lastTransitionTime":""#,
    r#""message":""#,
    r#""reason":""#,
    r#""status":"True","type":""#,
    r#""status":"False","type":""#,
    r#""finalizers":["kubernetes"]"#,
    r#""data":{"#,
    r#""type":""#,
    r#""status":{"#,
    r#""spec":{"#,
    // RBAC.
    r#""rules":[{"apiGroups":[""#,
    r#""apiGroups":[""#,
    r#""nonResourceURLs":[""#,
    r#""resourceNames":[""#,
    r#""resources":[""#,
    r#""verbs":["get","list","watch"]"#,
    r#""verbs":[""#,
    r#""roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":""#,
    r#""subjects":[{"#,
    r#""apiGroup":"rbac.authorization.k8s.io","kind":""#,
    r#""kind":"ServiceAccount","name":""#,
    r#""kind":"Group","name":""#,
    r#""kind":"User","name":""#,
    r#""rbac.authorization.kubernetes.io/autoupdate":"true""#,
    r#""kubernetes.io/bootstrapping":"rbac-defaults""#,
    // Leases.
    r#""acquireTime":""#,
    r#""holderIdentity":""#,
    r#""leaseDurationSeconds":"#,
    r#""leaseTransitions":"#,
    r#""renewTime":""#,
];

/// The phrases by their second byte (the first is always punctuation), longest first, so
/// packing tries only the few that can match at a position.
static BY_SECOND_BYTE: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let mut table = vec![Vec::new(); 256];
    let mut order: Vec<usize> = (0..PHRASES.len().min(256)).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(PHRASES[i].len()));
    for i in order {
        if let (Some(&second), Ok(index)) = (PHRASES[i].as_bytes().get(1), u8::try_from(i)) {
            table[usize::from(second)].push(index);
        }
    }
    table
});

/// Each phrase's first eight bytes (fewer for a shorter one) as a word, and the mask of the
/// bytes it has: a candidate that does not start the same is passed over with one compare.
static PREFIXES: LazyLock<Vec<(u64, u64)>> = LazyLock::new(|| {
    PHRASES
        .iter()
        .map(|phrase| {
            let bytes = phrase.as_bytes();
            let n = bytes.len().min(8);
            let mask = if n == 8 { u64::MAX } else { (1u64 << (8 * n)) - 1 };
            (first_word(bytes), mask)
        })
        .collect()
});

/// The first eight bytes of `text` (zeros past its end) as a little-endian word.
fn first_word(text: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    let n = text.len().min(8);
    word[..n].copy_from_slice(&text[..n]);
    u64::from_le_bytes(word)
}

/// `json` with each phrase as its code; None when it holds the mark byte, which no JSON text
/// does.
#[cfg(test)]
pub(crate) fn pack(json: &[u8]) -> Option<Box<[u8]>> {
    pack_tracking(b"", json, []).map(|(packed, [])| packed)
}

/// Offsets into a text, each None when unknown.
pub(crate) type Offsets<const N: usize> = [Option<usize>; N];

/// What a byte is to the packer: most are copied in runs, punctuation may start a phrase,
/// and the mark cannot be packed.
const PLAIN: u8 = 0;
const STARTS_PHRASE: u8 = 1;
const UNPACKABLE: u8 = 2;

static BYTE_CLASS: [u8; 256] = {
    let mut table = [PLAIN; 256];
    let mut i = 0;
    while i < PUNCTUATION.len() {
        table[PUNCTUATION[i] as usize] = STARTS_PHRASE;
        i += 1;
    }
    table[MARK as usize] = UNPACKABLE;
    table
};

/// `prefix` followed by [`pack`] of `json`, in one allocation, and where each of `offsets`
/// in `json` is in it (None when a phrase covers it). The bytes between punctuation are
/// copied a run at a time: only punctuation can start a phrase.
pub(crate) fn pack_tracking<const N: usize>(
    prefix: &[u8],
    json: &[u8],
    offsets: Offsets<N>,
) -> Option<(Box<[u8]>, Offsets<N>)> {
    thread_local! {
        /// Where each text is packed before it is copied to an allocation of its own size:
        /// a buffer per text, freed right after, would leave a hole beside every cached
        /// object, which the allocator keeps resident.
        static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    SCRATCH.with(|scratch| {
        let mut scratch = scratch.borrow_mut();
        scratch.clear();
        scratch.extend_from_slice(prefix);
        let packed = pack_into(json, offsets, &mut scratch);
        // A huge object's buffer is not kept for the small ones after it.
        if scratch.capacity() > 1 << 16 {
            *scratch = Vec::new();
        }
        packed
    })
}

/// [`pack_tracking`] with `packed` as the buffer to pack into, after what it holds.
fn pack_into<const N: usize>(
    json: &[u8],
    offsets: Offsets<N>,
    packed: &mut Vec<u8>,
) -> Option<(Box<[u8]>, Offsets<N>)> {
    let mut moved = [None; N];
    packed.reserve(json.len());
    let mut at = 0;
    while at < json.len() {
        let run = json[at..]
            .iter()
            .position(|&b| BYTE_CLASS[usize::from(b)] != PLAIN)
            .unwrap_or(json.len() - at);
        if run > 0 {
            for (offset, moved) in offsets.iter().zip(moved.iter_mut()) {
                if let Some(offset) = *offset
                    && (at..at + run).contains(&offset)
                {
                    *moved = Some(packed.len() + (offset - at));
                }
            }
            packed.extend_from_slice(&json[at..at + run]);
            at += run;
            continue;
        }
        let byte = json[at];
        if BYTE_CLASS[usize::from(byte)] == UNPACKABLE {
            return None;
        }
        for (offset, moved) in offsets.iter().zip(moved.iter_mut()) {
            if *offset == Some(at) {
                *moved = Some(packed.len());
            }
        }
        let rest = &json[at..];
        let phrase = rest.get(1).and_then(|&second| {
            let candidates = &BY_SECOND_BYTE[usize::from(second)];
            if candidates.is_empty() {
                return None;
            }
            let word = first_word(rest);
            candidates.iter().find(|&&i| {
                let (prefix, mask) = PREFIXES[usize::from(i)];
                word & mask == prefix && rest.starts_with(PHRASES[usize::from(i)].as_bytes())
            })
        });
        match phrase {
            Some(&index) => {
                packed.extend_from_slice(&[MARK, index]);
                at += PHRASES[usize::from(index)].len();
            }
            None => {
                packed.push(byte);
                at += 1;
            }
        }
    }
    // Copied to an allocation of its own size rather than shrunk in place: shrinking leaves
    // the unused tail of every cached object free between objects that stay.
    Some((Box::from(packed.as_slice()), moved))
}

/// The JSON text `packed` holds.
pub(crate) fn unpack(packed: &[u8]) -> Cow<'_, [u8]> {
    if !packed.contains(&MARK) {
        return Cow::Borrowed(packed);
    }
    let mut json = Vec::with_capacity(packed.len() * 2);
    let mut rest = packed;
    while let Some(at) = rest.iter().position(|&b| b == MARK) {
        json.extend_from_slice(&rest[..at]);
        let phrase = rest
            .get(at + 1)
            .and_then(|&i| PHRASES.get(usize::from(i)))
            .map_or(&b""[..], |p| p.as_bytes());
        json.extend_from_slice(phrase);
        rest = rest.get(at + 2..).unwrap_or_default();
    }
    json.extend_from_slice(rest);
    Cow::Owned(json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phrases_are_few_enough_and_start_and_end_with_punctuation() {
        assert!(PHRASES.len() <= 256);
        for phrase in PHRASES {
            let bytes = phrase.as_bytes();
            assert!(bytes.len() > 2, "{phrase}");
            assert!(PUNCTUATION.contains(&bytes[0]), "{phrase}");
            assert!(PUNCTUATION.contains(&bytes[bytes.len() - 1]), "{phrase}");
            assert!(!bytes.contains(&MARK));
        }
    }

    /// An IssuedToken record as the inventory stores one.
    fn issued_token() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "identity.badge.dev/v1", "kind": "IssuedToken",
            "metadata": {"name": "6f1c2a9e-3b7d-4c1e-9a52-000000000001", "namespace": "default",
                "uid": "0d6e3c1a-5f2b-4e7d-8c9a-1b2c3d4e5f60", "creationTimestamp": "2026-12-05T07:00:00Z",
                "labels": {"identity.badge.dev/service-account": "app", "identity.badge.dev/token-kind": "bound"}},
            "spec": {"serviceAccountName": "app", "serviceAccountUID": "2a4b6c8d-0e1f-4a3b-9c5d-7e9f1a3b5c7d",
                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                "keyID": "Xq3v9k2LrT8wYb5nJm1pQs7uZc4eHg6aDf0iKo2lNr8",
                "requester": {"username": "system:admin"},
                "issuedAt": "2026-12-05T07:00:00Z", "expiresAt": "2026-12-05T08:00:00Z"}
        })
    }

    #[test]
    fn packing_keeps_every_byte_and_halves_an_issued_token() {
        let record = serde_json::to_vec(&issued_token()).unwrap();
        let packed = pack(&record).unwrap();
        assert_eq!(unpack(&packed), &record[..]);
        assert!(
            packed.len() * 2 < record.len(),
            "{} of {}",
            packed.len(),
            record.len()
        );
    }

    #[test]
    fn text_resembling_phrases_round_trips() {
        let cases: &[&[u8]] = &[
            br#"{}"#,
            br#"{"a":"\"name\":\"","b":"\"uid\":\"x\""}"#,
            br#"{"name":"","uid":"","kind":"kind"}"#,
            br#"{"labels":{"identity.badge.dev/token-kind":"bound"}}"#,
            "{\"x\":\"caf\u{e9} \\u0001 \\\"\"}".as_bytes(),
            br#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"s"},"type":"kubernetes.io/service-account-token"}"#,
        ];
        for json in cases {
            assert_eq!(
                unpack(&pack(json).unwrap()),
                *json,
                "{}",
                String::from_utf8_lossy(json)
            );
        }
        assert_eq!(pack(b"\x01\x05"), None);
    }

    /// The packer as it was first written, a byte at a time: the one that copies runs must
    /// give the same bytes and offsets.
    fn pack_bytewise<const N: usize>(json: &[u8], offsets: Offsets<N>) -> Option<(Box<[u8]>, Offsets<N>)> {
        if json.contains(&MARK) {
            return None;
        }
        let mut moved = [None; N];
        let mut packed = Vec::with_capacity(json.len());
        let mut at = 0;
        while let Some(&byte) = json.get(at) {
            let rest = &json[at..];
            let phrase = match (PUNCTUATION.contains(&byte), rest.get(1)) {
                (true, Some(&second)) => BY_SECOND_BYTE[usize::from(second)]
                    .iter()
                    .find(|&&i| rest.starts_with(PHRASES[usize::from(i)].as_bytes())),
                _ => None,
            };
            for (offset, moved) in offsets.iter().zip(moved.iter_mut()) {
                if *offset == Some(at) {
                    *moved = Some(packed.len());
                }
            }
            match phrase {
                Some(&index) => {
                    packed.extend_from_slice(&[MARK, index]);
                    at += PHRASES[usize::from(index)].len();
                }
                None => {
                    packed.push(byte);
                    at += 1;
                }
            }
        }
        Some((packed.into_boxed_slice(), moved))
    }

    #[test]
    fn a_prefix_comes_first_and_moves_the_offsets_by_its_length() {
        let json = br#"{"metadata":{"name":"n","uid":"u-1"}}"#;
        let uid = json.windows(3).position(|w| w == b"u-1");
        let (alone, [at]) = pack_tracking(b"", json, [uid]).unwrap();
        let (prefixed, [moved]) = pack_tracking(b"/registry/k", json, [uid]).unwrap();
        assert_eq!(&prefixed[..11], b"/registry/k");
        assert_eq!(prefixed[11..], alone[..]);
        assert_eq!(moved, at.map(|at| at + 11));
        assert_eq!(&unpack(&prefixed[11..])[..], &json[..]);
    }

    #[test]
    fn packing_in_runs_gives_the_bytes_and_offsets_of_packing_byte_by_byte() {
        // A pod-bound record, used once.
        let mut record = issued_token();
        let spec = &mut record["spec"];
        spec.as_object_mut().unwrap().remove("keyID");
        spec["boundObjectRef"] = serde_json::json!({"kind": "Pod", "name": "web", "uid": "9b8a7c6d"});
        spec["requester"]["username"] = "system:node:worker-17".into();
        record["status"] = serde_json::json!({"lastUsed": {"sourceAddress": "10.0.0.1",
            "time": "2026-12-05T07:05:00Z", "userAgent": "kubelet/v1.35.0"}, "useCount": 1});
        let record = serde_json::to_vec(&record).unwrap();
        let cases: Vec<Vec<u8>> = vec![
            record,
            br#"{}"#.to_vec(),
            br#"{"a":"\"name\":\"","b":"\"uid\":\"x\""}"#.to_vec(),
            br#"{"name":"","uid":"","kind":"kind"}"#.to_vec(),
            br#"[{"x":[1,2,{"y":"z"}]},":",","]"#.to_vec(),
            "{\"x\":\"caf\u{e9} \\u0001 \\\"\"}".as_bytes().to_vec(),
            b"plain".to_vec(),
            b"\x01\x05".to_vec(),
            b"{\"a\":\"\x01\"}".to_vec(),
            b"{".to_vec(),
        ];
        for json in &cases {
            // Every position as an offset, in fours, and none.
            let mut at = 0;
            while at <= json.len() + 4 {
                let offsets = [Some(at), Some(at + 1), Some(at + 2), Some(at + 3)];
                assert_eq!(
                    pack_tracking(b"", json, offsets),
                    pack_bytewise(json, offsets),
                    "{} at {at}",
                    String::from_utf8_lossy(json)
                );
                at += 4;
            }
            assert_eq!(pack_tracking(b"", json, [None]), pack_bytewise(json, [None]));
        }
    }
}
