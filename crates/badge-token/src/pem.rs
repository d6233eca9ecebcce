//! badge's one PEM module (RFC 7468). Reading is as Go's `encoding/pem.Decode` reads key
//! files (upstream src/encoding/pem/pem.go): any text outside `-----BEGIN …-----` /
//! `-----END …-----` pairs is ignored, blocks are returned in order. Writing is as Go's
//! `pem.Encode`: 64 base64 characters a line.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

use crate::keys::KeyError;

/// One decoded PEM block. The DER may be private key material, so there is no Debug.
pub struct Block {
    /// The label after `BEGIN`, such as `PRIVATE KEY`.
    pub label: String,
    /// The base64-decoded body.
    pub der: Vec<u8>,
}

/// Every block of `input`, in order; encrypted keys are refused.
pub fn parse_all(input: &str) -> Result<Vec<Block>, KeyError> {
    let mut blocks = Vec::new();
    let mut lines = input.lines();
    while let Some(line) = lines.next() {
        let Some(label) = armour_label(line.trim(), "-----BEGIN ") else {
            continue;
        };
        let mut body = String::new();
        let mut closed = false;
        for line in lines.by_ref() {
            let line = line.trim();
            if let Some(end) = armour_label(line, "-----END ") {
                if end != label {
                    return Err(KeyError::MalformedPem);
                }
                closed = true;
                break;
            }
            // RFC 1421 headers (`Proc-Type: 4,ENCRYPTED`, `DEK-Info: …`) only appear on
            // encrypted legacy keys, which a server started unattended cannot use.
            if line.contains(':') {
                return Err(KeyError::EncryptedPem);
            }
            body.push_str(line);
        }
        if !closed {
            return Err(KeyError::MalformedPem);
        }
        if label == "ENCRYPTED PRIVATE KEY" {
            return Err(KeyError::EncryptedPem);
        }
        let der = STANDARD
            .decode(body.as_bytes())
            .map_err(|_| KeyError::MalformedPem)?;
        blocks.push(Block {
            label: label.to_owned(),
            der,
        });
    }
    Ok(blocks)
}

/// PEM text for `der` under `label`, 64 characters a line.
pub fn encode(label: &str, der: &[u8]) -> String {
    let b64 = STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    // Base64 output is ASCII, so splitting bytes never splits a character.
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn armour_label<'a>(line: &'a str, prefix: &str) -> Option<&'a str> {
    line.strip_prefix(prefix)?.strip_suffix("-----")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reads_blocks_in_order_and_skips_text() {
        let text = "junk\n-----BEGIN A-----\nAQID\n-----END A-----\nmore\n-----BEGIN B C-----\nBA==\n-----END B C-----\n";
        let blocks = parse_all(text).unwrap();
        assert_eq!(blocks.len(), 2);
        assert_eq!(blocks[0].label, "A");
        assert_eq!(blocks[0].der, vec![1, 2, 3]);
        assert_eq!(blocks[1].label, "B C");
        assert_eq!(blocks[1].der, vec![4]);
    }

    #[test]
    fn encoded_blocks_read_back() {
        let der: Vec<u8> = (0..=255).collect();
        let text = encode("CERTIFICATE", &der);
        assert!(text.lines().all(|line| line.len() <= 64));
        let blocks = parse_all(&text).unwrap();
        assert_eq!(blocks.len(), 1);
        assert_eq!(blocks[0].label, "CERTIFICATE");
        assert_eq!(blocks[0].der, der);
    }

    #[test]
    fn refuses_broken_armour() {
        assert!(matches!(
            parse_all("-----BEGIN A-----\nAQID\n"),
            Err(KeyError::MalformedPem)
        ));
        assert!(matches!(
            parse_all("-----BEGIN A-----\nAQID\n-----END B-----\n"),
            Err(KeyError::MalformedPem)
        ));
        assert!(matches!(
            parse_all("-----BEGIN A-----\n!!!!\n-----END A-----\n"),
            Err(KeyError::MalformedPem)
        ));
        assert!(matches!(
            parse_all(
                "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAQID\n-----END RSA PRIVATE KEY-----\n"
            ),
            Err(KeyError::EncryptedPem)
        ));
        assert!(matches!(
            parse_all("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAQID\n-----END ENCRYPTED PRIVATE KEY-----\n"),
            Err(KeyError::EncryptedPem)
        ));
        assert!(parse_all("no pem here").unwrap().is_empty());
    }
}
