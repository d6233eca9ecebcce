//! CertificateSigningRequests (`certificates.k8s.io/v1`): parsing the request, validation
//! (`pkg/apis/certificates/validation`) and what each kind of update may change
//! (`pkg/registry/certificates/certificates/strategy.go`).

use badge_api::status::FieldError;
use base64::Engine;
use serde_json::{Value, json};
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::ParsedExtension;
use x509_parser::prelude::FromDer;

/// Condition type of a request an approver approved.
pub const APPROVED: &str = "Approved";
/// Condition type of a request an approver denied.
pub const DENIED: &str = "Denied";
/// Condition type of a request its signer could not sign.
pub const FAILED: &str = "Failed";

/// Signer of client certificates kube-apiserver accepts.
pub const KUBE_APISERVER_CLIENT: &str = "kubernetes.io/kube-apiserver-client";
/// Signer of the client certificates kubelets authenticate with (`system:node:<name>` in `system:nodes`).
pub const KUBE_APISERVER_CLIENT_KUBELET: &str = "kubernetes.io/kube-apiserver-client-kubelet";
/// Signer of `certificates.k8s.io/v1beta1` requests that named none; v1 refuses it.
pub const LEGACY_UNKNOWN: &str = "kubernetes.io/legacy-unknown";

/// The key usages a request may name (`KeyUsage` upstream).
pub const KNOWN_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// What the signers and the approver look at in a certificate request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParsedRequest {
    /// The subject's common name.
    pub common_name: String,
    /// The subject's organizations.
    pub organizations: Vec<String>,
    /// DNS names, email addresses, IP addresses and URIs requested as SANs.
    pub san_count: usize,
    /// The DER of the request's subject, to be copied into the certificate as it is.
    pub subject_der: Vec<u8>,
    /// The DER of the whole request.
    pub der: Vec<u8>,
}

/// The PEM bytes of `spec.request` (base64 in JSON).
pub fn request_bytes(object: &Value) -> Vec<u8> {
    let text = object
        .pointer("/spec/request")
        .and_then(Value::as_str)
        .unwrap_or("");
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default()
}

/// Parses a PEM certificate request and checks its signature (`ParseCSR` and
/// `CheckSignature`).
pub fn parse_request(pem: &[u8]) -> Result<ParsedRequest, String> {
    const WRONG_BLOCK: &str = "PEM block type must be CERTIFICATE REQUEST";
    let (_, block) = x509_parser::pem::parse_x509_pem(pem).map_err(|_| WRONG_BLOCK.to_string())?;
    if block.label != "CERTIFICATE REQUEST" {
        return Err(WRONG_BLOCK.into());
    }
    let (_, csr) = X509CertificationRequest::from_der(&block.contents)
        .map_err(|e| format!("x509: malformed certificate request: {e}"))?;
    csr.verify_signature()
        .map_err(|_| "x509: ECDSA/RSA verification failure".to_string())?;
    let subject = &csr.certification_request_info.subject;
    let text = |a: &x509_parser::x509::AttributeTypeAndValue<'_>| a.as_str().unwrap_or("").to_string();
    let common_name = subject.iter_common_name().next().map(text).unwrap_or_default();
    let organizations = subject.iter_organization().map(text).collect();
    let mut san_count = 0;
    if let Some(extensions) = csr.requested_extensions() {
        for extension in extensions {
            if let ParsedExtension::SubjectAlternativeName(san) = extension {
                san_count += san.general_names.len();
            }
        }
    }
    Ok(ParsedRequest {
        common_name,
        organizations,
        san_count,
        subject_der: subject.as_raw().to_vec(),
        der: block.contents.clone(),
    })
}

fn conditions(object: &Value) -> &[Value] {
    object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

fn condition_type(condition: &Value) -> &str {
    condition.get("type").and_then(Value::as_str).unwrap_or("")
}

/// Whether the request has a condition of this type (with status True, as validation
/// requires of the known types).
pub fn has_condition(object: &Value, kind: &str) -> bool {
    conditions(object).iter().any(|c| condition_type(c) == kind)
}

/// `spec.signerName`, "" when absent.
pub fn signer_name(object: &Value) -> &str {
    object
        .pointer("/spec/signerName")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// `spec.usages`, the strings among them.
pub fn usages(object: &Value) -> Vec<&str> {
    object
        .pointer("/spec/usages")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Fills the requestor fields from the user making the request, whatever the body said
/// (`PrepareForCreate`): only the server may say who asked.
pub fn set_requestor(object: &mut Value, user: &str, uid: &str, groups: &[String], extra: &Value) {
    let Some(spec) = object.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    for field in ["username", "uid", "groups", "extra"] {
        spec.remove(field);
    }
    if !user.is_empty() {
        spec.insert("username".into(), json!(user));
    }
    if !uid.is_empty() {
        spec.insert("uid".into(), json!(uid));
    }
    if !groups.is_empty() {
        spec.insert("groups".into(), json!(groups));
    }
    if extra.as_object().is_some_and(|m| !m.is_empty()) {
        spec.insert("extra".into(), extra.clone());
    }
}

/// A new request starts with no status.
pub fn prepare_create(object: &mut Value) {
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
}

/// What each kind of update may change: a plain update nothing but metadata, `approval`
/// only the conditions, `status` the status but not the Approved and Denied conditions.
pub fn prepare_update(subresource: &str, object: &mut Value, old: &Value) {
    let now = badge_api::meta::format_time(badge_api::clock::now());
    match subresource {
        "approval" => {
            let given = conditions(object).to_vec();
            let mut updated = old.clone();
            if let Some(meta) = object.get("metadata") {
                updated["metadata"] = meta.clone();
            }
            set_conditions(&mut updated, given);
            *object = updated;
        }
        "status" => {
            let status = object.get("status").cloned().unwrap_or_else(|| json!({}));
            let mut updated = old.clone();
            updated["status"] = if status.is_object() { status } else { json!({}) };
            // The approval is the approval subresource's to give: keep what it gave.
            let approval = |c: &Value| matches!(condition_type(c), APPROVED | DENIED);
            let mut kept: Vec<Value> = conditions(old).iter().filter(|c| approval(c)).cloned().collect();
            kept.extend(conditions(&updated).iter().filter(|c| !approval(c)).cloned());
            set_conditions(&mut updated, kept);
            *object = updated;
        }
        _ => {
            for field in ["spec", "status"] {
                match old.get(field) {
                    Some(v) => object[field] = v.clone(),
                    None => {
                        if let Some(map) = object.as_object_mut() {
                            map.remove(field);
                        }
                    }
                }
            }
        }
    }
    populate_condition_timestamps(object, old, &now);
}

fn set_conditions(object: &mut Value, list: Vec<Value>) {
    if !object.get("status").is_some_and(Value::is_object) {
        object["status"] = json!({});
    }
    if list.is_empty() {
        if let Some(status) = object.get_mut("status").and_then(Value::as_object_mut) {
            status.remove("conditions");
        }
    } else {
        object["status"]["conditions"] = Value::Array(list);
    }
}

/// `lastUpdateTime` defaults to now; `lastTransitionTime` is now for a new condition or a
/// changed status, else the old one's.
fn populate_condition_timestamps(object: &mut Value, old: &Value, now: &str) {
    let previous: Vec<Value> = conditions(old).to_vec();
    let Some(list) = object
        .pointer_mut("/status/conditions")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for condition in list.iter_mut() {
        let Some(map) = condition.as_object_mut() else {
            continue;
        };
        if map.get("lastUpdateTime").is_none_or(Value::is_null) {
            map.insert("lastUpdateTime".into(), json!(now));
        }
        if map.get("lastTransitionTime").is_some_and(|v| !v.is_null()) {
            continue;
        }
        let kind = map.get("type").and_then(Value::as_str).unwrap_or("");
        let status = map.get("status").and_then(Value::as_str).unwrap_or("");
        let same = previous
            .iter()
            .find(|c| condition_type(c) == kind && c.get("status").and_then(Value::as_str) == Some(status));
        let at = same
            .and_then(|c| c.get("lastTransitionTime"))
            .filter(|v| !v.is_null())
            .cloned()
            .unwrap_or_else(|| json!(now));
        map.insert("lastTransitionTime".into(), at);
    }
}

/// `ValidateCertificateSigningRequestCreate` / `...Update`, `...ApprovalUpdate`,
/// `...StatusUpdate` for the v1 API.
pub fn validate(object: &Value, old: Option<&Value>, subresource: &str, errs: &mut Vec<FieldError>) {
    validate_spec(object, errs);
    validate_conditions(object, errs);
    validate_certificate(object, errs);
    let Some(old) = old else { return };
    for kind in [APPROVED, DENIED, FAILED] {
        if has_condition(old, kind) && !has_condition(object, kind) {
            errs.push(FieldError::forbidden(
                "status.conditions",
                format!("updates may not remove a condition of type \"{kind}\""),
            ));
        }
    }
    let old_certificate = old
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    let certificate = object
        .pointer("/status/certificate")
        .and_then(Value::as_str)
        .unwrap_or("");
    if certificate == old_certificate {
        return;
    }
    if !old_certificate.is_empty() {
        errs.push(FieldError::forbidden(
            "status.certificate",
            "updates may not modify existing certificate content",
        ));
    } else if subresource == "status" {
        if !has_condition(object, APPROVED) {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not set certificate content unless the Approved condition is present",
            ));
        } else if has_condition(object, FAILED) {
            errs.push(FieldError::forbidden(
                "status.certificate",
                "updates may not set certificate content if a Failed condition is present",
            ));
        }
    }
}

fn validate_spec(object: &Value, errs: &mut Vec<FieldError>) {
    let request = request_bytes(object);
    if let Err(message) = parse_request(&request) {
        errs.push(FieldError::invalid(
            "spec.request",
            String::from_utf8_lossy(&request).into_owned(),
            message,
        ));
    }
    let usages = usages(object);
    if usages.is_empty() {
        errs.push(FieldError::required("spec.usages", "usages must be provided"));
    }
    for (i, usage) in usages.iter().enumerate() {
        if !KNOWN_USAGES.contains(usage) {
            errs.push(FieldError::not_supported(
                format!("spec.usages[{i}]"),
                *usage,
                KNOWN_USAGES,
            ));
        } else if usages[..i].contains(usage) {
            errs.push(FieldError::duplicate(format!("spec.usages[{i}]"), *usage));
        }
    }
    let signer = signer_name(object);
    if signer.is_empty() {
        errs.push(FieldError::required("spec.signerName", ""));
    } else if signer == LEGACY_UNKNOWN {
        errs.push(FieldError::invalid(
            "spec.signerName",
            signer,
            "the legacy signerName is not allowed via this API version",
        ));
    } else {
        for message in signer_name_errors(signer) {
            errs.push(FieldError::invalid("spec.signerName", signer, message));
        }
    }
    if let Some(seconds) = object.pointer("/spec/expirationSeconds").and_then(Value::as_i64)
        && seconds < 600
    {
        errs.push(FieldError::invalid(
            "spec.expirationSeconds",
            seconds,
            "may not specify a duration less than 600 seconds (10 minutes)",
        ));
    }
}

/// `ValidateSignerName`: a fully qualified domain, a slash, and a path.
fn signer_name_errors(signer: &str) -> Vec<String> {
    const FORM: &str = "must be a fully qualified domain and path of the form 'example.com/signer-name'";
    let Some((domain, path)) = signer.split_once('/') else {
        return vec![FORM.into()];
    };
    let mut errors = Vec::new();
    if path.is_empty() {
        errors.push("validating path: must not be empty".into());
    }
    if domain.is_empty() || !domain.contains('.') {
        errors.push(FORM.into());
    }
    for message in badge_api::validation::dns1123_subdomain_errors(domain) {
        errors.push(format!("validating domain: {message}"));
    }
    errors
}

fn validate_conditions(object: &Value, errs: &mut Vec<FieldError>) {
    let list = conditions(object);
    let mut seen: Vec<&str> = Vec::new();
    for (i, condition) in list.iter().enumerate() {
        let kind = condition_type(condition);
        let status = condition.get("status").and_then(Value::as_str).unwrap_or("");
        if kind.is_empty() {
            errs.push(FieldError::required(format!("status.conditions[{i}].type"), ""));
        }
        let field = format!("status.conditions[{i}].status");
        match kind {
            APPROVED | DENIED | FAILED => {
                if seen.contains(&kind) {
                    errs.push(FieldError::duplicate(
                        format!("status.conditions[{i}].type"),
                        kind,
                    ));
                }
                seen.push(kind);
                if status != "True" {
                    errs.push(FieldError::not_supported(field, status, &["True"]));
                }
            }
            _ => {
                if !matches!(status, "True" | "False" | "Unknown") {
                    errs.push(FieldError::not_supported(
                        field,
                        status,
                        &["False", "True", "Unknown"],
                    ));
                }
            }
        }
    }
    if seen.contains(&APPROVED) && seen.contains(&DENIED) {
        errs.push(FieldError::invalid(
            "status.conditions",
            Value::Array(list.to_vec()),
            "Approved and Denied conditions are mutually exclusive",
        ));
    }
}

/// `status.certificate`: one or more PEM `CERTIFICATE` blocks, each a certificate.
fn validate_certificate(object: &Value, errs: &mut Vec<FieldError>) {
    let Some(text) = object.pointer("/status/certificate").and_then(Value::as_str) else {
        return;
    };
    if text.is_empty() {
        return;
    }
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap_or_default();
    if let Err(message) = certificate_errors(&bytes) {
        // The content is not echoed back, as upstream.
        errs.push(FieldError::invalid(
            "status.certificate",
            "<certificate data>",
            message,
        ));
    }
}

fn certificate_errors(bytes: &[u8]) -> Result<(), String> {
    let mut blocks = 0;
    for block in x509_parser::pem::Pem::iter_from_buffer(bytes) {
        let Ok(block) = block else { break };
        if block.label != "CERTIFICATE" {
            return Err(format!(
                "only CERTIFICATE PEM blocks are allowed, found {:?}",
                block.label
            ));
        }
        x509_parser::parse_x509_certificate(&block.contents)
            .map_err(|e| format!("failed to parse certificate: {e}"))?;
        blocks += 1;
    }
    if blocks == 0 {
        return Err("must contain at least one CERTIFICATE PEM block".into());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn request_pem(cn: &str, orgs: &[&str]) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        for o in orgs {
            params
                .distinguished_name
                .push(rcgen::DnType::OrganizationName, *o);
        }
        params.serialize_request(&key).unwrap().pem().unwrap()
    }

    fn csr(pem: &str) -> Value {
        json!({
            "metadata": {"name": "c"},
            "spec": {
                "request": base64::engine::general_purpose::STANDARD.encode(pem),
                "signerName": KUBE_APISERVER_CLIENT_KUBELET,
                "usages": ["digital signature", "client auth"],
            }
        })
    }

    fn fields(object: &Value, old: Option<&Value>, subresource: &str) -> Vec<String> {
        let mut errs = Vec::new();
        validate(object, old, subresource, &mut errs);
        errs.into_iter()
            .map(|e| format!("{}: {}", e.field, e.detail))
            .collect()
    }

    #[test]
    fn a_well_formed_request_parses_and_validates() {
        let pem = request_pem("system:node:n1", &["system:nodes"]);
        let parsed = parse_request(pem.as_bytes()).unwrap();
        assert_eq!(parsed.common_name, "system:node:n1");
        assert_eq!(parsed.organizations, vec!["system:nodes"]);
        assert_eq!(parsed.san_count, 0);
        assert!(fields(&csr(&pem), None, "").is_empty());
    }

    #[test]
    fn the_request_must_be_a_signed_certificate_request() {
        let pem = request_pem("u", &[]);
        let wrong_block = pem.replace("CERTIFICATE REQUEST", "PUBLIC KEY");
        assert_eq!(
            fields(&csr(&wrong_block), None, ""),
            vec!["spec.request: PEM block type must be CERTIFICATE REQUEST"]
        );
        // Flip a bit of the signature (the last bytes of the DER) and re-encode.
        let (_, block) = x509_parser::pem::parse_x509_pem(pem.as_bytes()).unwrap();
        let mut der = block.contents.clone();
        let last = der.len() - 3;
        der[last] ^= 1;
        let tampered = format!(
            "-----BEGIN CERTIFICATE REQUEST-----\n{}\n-----END CERTIFICATE REQUEST-----\n",
            base64::engine::general_purpose::STANDARD.encode(&der)
        );
        assert!(parse_request(tampered.as_bytes()).is_err());
        assert_eq!(fields(&csr(&tampered), None, "").len(), 1);
    }

    #[test]
    fn spec_rules() {
        let pem = request_pem("u", &[]);
        let mut object = csr(&pem);
        object["spec"]["signerName"] = json!(LEGACY_UNKNOWN);
        object["spec"]["usages"] = json!(["client auth", "bogus", "client auth"]);
        object["spec"]["expirationSeconds"] = json!(599);
        let errs = fields(&object, None, "");
        assert!(
            errs.contains(
                &"spec.signerName: the legacy signerName is not allowed via this API version".to_string()
            ),
            "{errs:?}"
        );
        assert!(errs.iter().any(|e| e.starts_with("spec.usages[1]")), "{errs:?}");
        assert!(errs.iter().any(|e| e.starts_with("spec.usages[2]")), "{errs:?}");
        assert!(
            errs.contains(
                &"spec.expirationSeconds: may not specify a duration less than 600 seconds (10 minutes)"
                    .to_string()
            )
        );
        object["spec"]["signerName"] = json!("no-slash");
        object["spec"]["usages"] = json!([]);
        object["spec"]["expirationSeconds"] = json!(600);
        let errs = fields(&object, None, "");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert!(errs[0].starts_with("spec.usages"));
        assert!(errs[1].starts_with("spec.signerName: must be a fully qualified domain"));
        object["spec"]["signerName"] = json!("");
        assert!(
            fields(&object, None, "")
                .iter()
                .any(|e| e.starts_with("spec.signerName: "))
        );
    }

    #[test]
    fn conditions_are_exclusive_and_permanent() {
        let pem = request_pem("u", &[]);
        let mut both = csr(&pem);
        both["status"] = json!({"conditions": [
            {"type": APPROVED, "status": "True"}, {"type": DENIED, "status": "True"}]});
        assert_eq!(
            fields(&both, None, "approval"),
            vec!["status.conditions: Approved and Denied conditions are mutually exclusive"]
        );
        let mut approved = csr(&pem);
        approved["status"] = json!({"conditions": [{"type": APPROVED, "status": "True"}]});
        let mut removed = approved.clone();
        removed["status"] = json!({});
        assert_eq!(
            fields(&removed, Some(&approved), "approval"),
            vec!["status.conditions: updates may not remove a condition of type \"Approved\""]
        );
        let mut not_true = csr(&pem);
        not_true["status"] = json!({"conditions": [{"type": APPROVED, "status": "False"}]});
        assert_eq!(fields(&not_true, None, "approval").len(), 1);
    }

    #[test]
    fn each_update_changes_only_its_part() {
        let pem = request_pem("u", &[]);
        let mut old = csr(&pem);
        old["spec"]["username"] = json!("alice");
        // A plain update keeps spec and status.
        let mut given = csr(&pem);
        given["spec"]["username"] = json!("mallory");
        given["status"] = json!({"conditions": [{"type": APPROVED, "status": "True"}]});
        let mut plain = given.clone();
        prepare_update("", &mut plain, &old);
        assert_eq!(plain["spec"]["username"], "alice");
        assert!(plain.get("status").is_none());
        // Approval takes the conditions only, with timestamps.
        let mut approval = given.clone();
        prepare_update("approval", &mut approval, &old);
        assert_eq!(approval["spec"]["username"], "alice");
        assert_eq!(approval["status"]["conditions"][0]["type"], APPROVED);
        assert!(approval["status"]["conditions"][0]["lastUpdateTime"].is_string());
        assert!(approval["status"]["conditions"][0]["lastTransitionTime"].is_string());
        // Status cannot add an approval.
        let mut status = given.clone();
        prepare_update("status", &mut status, &old);
        assert!(!has_condition(&status, APPROVED));
        // Nor can a certificate be set without one.
        let mut certificate = old.clone();
        certificate["status"] = json!({"certificate": "eA=="});
        let errs = fields(&certificate, Some(&old), "status");
        assert!(
            errs.iter().any(|e| e.contains("unless the Approved condition")),
            "{errs:?}"
        );
    }

    #[test]
    fn requestor_fields_come_from_the_user_only() {
        let mut object = csr(&request_pem("u", &[]));
        object["spec"]["username"] = json!("someone-else");
        object["spec"]["groups"] = json!(["system:masters"]);
        set_requestor(&mut object, "bob", "", &["g".into()], &json!({}));
        assert_eq!(object["spec"]["username"], "bob");
        assert_eq!(object["spec"]["groups"], json!(["g"]));
        assert!(object["spec"].get("uid").is_none());
        assert!(object["spec"].get("extra").is_none());
    }
}
