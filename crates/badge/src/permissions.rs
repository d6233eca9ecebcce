//! The data dir holds every key of a deployment: the CA's and the serving key, the key
//! ring's sealing key, the encryption configuration. A server refuses to start while any of
//! them (or the directories holding them) is open to its group or to others, as ssh refuses
//! a private key others can read. The check reads the mode bits, not access(2), so it holds
//! for root too.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The files in the pki dir that hold key material, beside every `*.key`.
const KEY_FILES: [&str; 1] = [badge_encryption::DEFAULT_CONFIG_FILE];

/// Fails naming the first of the data dir, its pki dir and the key files in it that its
/// group or others can reach, with the chmod that fixes it. Absent ones are skipped: a
/// first start creates them private.
pub(crate) fn check_private(data_dir: &Path) -> anyhow::Result<()> {
    let pki = data_dir.join("pki");
    let mut checks: Vec<(PathBuf, u32)> = vec![(data_dir.to_path_buf(), 0o700), (pki.clone(), 0o700)];
    if let Ok(entries) = std::fs::read_dir(&pki) {
        let mut keys: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.extension().is_some_and(|e| e == "key")
                    || p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| KEY_FILES.contains(&n))
            })
            .collect();
        keys.sort();
        checks.extend(keys.into_iter().map(|p| (p, 0o600)));
    }
    for (path, fix) in checks {
        let mode = match std::fs::metadata(&path) {
            Ok(metadata) => metadata.permissions().mode() & 0o7777,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => anyhow::bail!("checking {}: {e}", path.display()),
        };
        if let Some(exposure) = exposure(mode) {
            anyhow::bail!(
                "{} is {exposure} (mode {mode:04o}); run chmod {fix:o} {}",
                path.display(),
                path.display()
            );
        }
    }
    Ok(())
}

/// How a mode opens a file beyond its owner, in words; None when it does not.
fn exposure(mode: u32) -> Option<String> {
    let (who, bits) = if mode & 0o007 != 0 {
        ("others", mode & 0o007)
    } else if mode & 0o070 != 0 {
        ("its group", (mode >> 3) & 0o007)
    } else {
        return None;
    };
    let how = if bits & 0o4 != 0 {
        "readable"
    } else if bits & 0o2 != 0 {
        "writable"
    } else {
        "accessible"
    };
    Some(format!("{how} by {who}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn chmod(path: &Path, mode: u32) {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A data dir as a start leaves it: private directories, private keys, public
    /// certificates.
    fn data_dir() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o700);
        let pki = dir.path().join("pki");
        std::fs::create_dir(&pki).unwrap();
        chmod(&pki, 0o700);
        for (name, mode) in [
            ("ca.crt", 0o644),
            ("ca.key", 0o600),
            ("keyring-seal.key", 0o600),
            ("encryption-config.yaml", 0o600),
        ] {
            std::fs::write(pki.join(name), "x").unwrap();
            chmod(&pki.join(name), mode);
        }
        std::fs::write(dir.path().join("store.db"), "x").unwrap();
        chmod(&dir.path().join("store.db"), 0o644);
        dir
    }

    #[test]
    fn a_private_data_dir_passes_and_an_empty_one_too() {
        let dir = data_dir();
        check_private(dir.path()).unwrap();
        let empty = tempfile::tempdir().unwrap();
        chmod(empty.path(), 0o700);
        check_private(empty.path()).unwrap();
    }

    #[test]
    fn each_key_file_and_directory_open_to_others_is_named_with_its_fix() {
        for (name, mode, fix, words) in [
            (
                "pki/encryption-config.yaml",
                0o644,
                "600",
                "readable by others (mode 0644)",
            ),
            (
                "pki/keyring-seal.key",
                0o640,
                "600",
                "readable by its group (mode 0640)",
            ),
            ("pki/ca.key", 0o602, "600", "writable by others (mode 0602)"),
            ("pki", 0o755, "700", "readable by others (mode 0755)"),
            ("", 0o710, "700", "accessible by its group (mode 0710)"),
        ] {
            let dir = data_dir();
            let path = match name {
                "" => dir.path().to_path_buf(),
                name => dir.path().join(name),
            };
            chmod(&path, mode);
            let error = check_private(dir.path()).unwrap_err().to_string();
            assert_eq!(
                error,
                format!(
                    "{} is {words}; run chmod {fix} {}",
                    path.display(),
                    path.display()
                ),
                "{name}"
            );
        }
    }

    #[test]
    fn certificates_and_the_store_are_not_key_files() {
        let dir = data_dir();
        chmod(&dir.path().join("pki/ca.crt"), 0o666);
        check_private(dir.path()).unwrap();
    }
}
