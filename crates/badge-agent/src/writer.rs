//! The kubelet's atomic writer (pkg/volume/util/atomic_writer.go): a volume's files are
//! written into a new hidden timestamped directory, `..data` is swapped to it with one
//! rename(2), and the user-visible names are symlinks through `..data`, so a reader sees
//! the old set or the new set, never a mix.
//!
//! CVE-2021-25741: nothing here follows a symlink the agent did not make. Directories are
//! checked with `symlink_metadata`, files are created with `O_CREAT|O_EXCL|O_NOFOLLOW`,
//! and anything unexpected where the agent's own links belong is refused, not replaced.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use anyhow::{Context, anyhow, bail};

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// One file of a volume: a validated relative path, its bytes and its mode.
#[derive(Clone, PartialEq, Eq)]
pub struct File {
    /// The path inside the volume, relative and without `..`.
    pub path: String,
    /// The file's contents.
    pub data: Vec<u8>,
    /// Permission bits, as the volume's `defaultMode` or item `mode` gives them.
    pub mode: u32,
}

// Hand-written: file contents are tokens and secrets.
impl std::fmt::Debug for File {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "File({:?}, {} bytes, {:o})",
            self.path,
            self.data.len(),
            self.mode
        )
    }
}

/// The upstream path rules: relative, no `..` element, not starting with `..` (reserved
/// for the writer), each element at most 255 bytes and the whole at most 4096.
pub fn validate_path(path: &str) -> anyhow::Result<()> {
    if path.is_empty() {
        bail!("an empty path");
    }
    if path.len() > 4096 {
        bail!("path {path:?} is longer than 4096 bytes");
    }
    if path.starts_with("..") {
        bail!("path {path:?} starts with '..'");
    }
    for component in Path::new(path).components() {
        match component {
            Component::Normal(c) if c.len() <= 255 => {}
            Component::Normal(_) => bail!("path {path:?} has an element longer than 255 bytes"),
            _ => bail!("path {path:?} must be relative without '..' or '.' elements"),
        }
    }
    Ok(())
}

/// A single path element the agent makes from API data (a pod uid, a volume name).
pub fn validate_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.len() > 255
    {
        bail!("{name:?} cannot be a directory name");
    }
    Ok(())
}

/// Creates `base/relative` one element at a time, refusing any element that is a symlink
/// or not a directory. `base` itself is the operator's choice and trusted.
pub fn ensure_dir(base: &Path, relative: &[&str]) -> anyhow::Result<PathBuf> {
    let mut dir = base.to_path_buf();
    for name in relative {
        validate_name(name)?;
        dir.push(name);
        match std::fs::DirBuilder::new().mode(0o755).create(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e).with_context(|| format!("creating {}", dir.display())),
        }
        let meta = std::fs::symlink_metadata(&dir)?;
        if !meta.file_type().is_dir() {
            bail!("{} is not a directory the agent made; refusing it", dir.display());
        }
    }
    Ok(dir)
}

/// The timestamped directory `..data` names now, if any; refuses a `..data` that is not a
/// symlink to a sibling hidden directory.
fn current_data(dir: &Path) -> anyhow::Result<Option<String>> {
    let link = dir.join(DATA);
    match std::fs::symlink_metadata(&link) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
        Ok(m) if !m.file_type().is_symlink() => {
            bail!("{} is not a symlink; refusing the volume", link.display())
        }
        Ok(_) => {}
    }
    let target = std::fs::read_link(&link)?;
    let name = target
        .to_str()
        .filter(|t| t.starts_with("..") && !t.contains('/') && *t != ".." && *t != DATA)
        .ok_or_else(|| anyhow!("{} points outside the volume", link.display()))?;
    Ok(Some(name.to_string()))
}

/// Reads back the files under a timestamped directory, without following symlinks.
fn read_set(root: &Path) -> anyhow::Result<BTreeMap<String, (Vec<u8>, u32)>> {
    let mut found = BTreeMap::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let relative = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            let meta = std::fs::symlink_metadata(entry.path())?;
            if meta.file_type().is_dir() {
                stack.push((entry.path(), relative));
            } else if meta.file_type().is_file() {
                let data = std::fs::read(entry.path())?;
                found.insert(relative, (data, meta.permissions().mode() & 0o7777));
            } else {
                bail!("unexpected {} in the volume", entry.path().display());
            }
        }
    }
    Ok(found)
}

fn top_level(path: &str) -> &str {
    path.split('/').next().unwrap_or(path)
}

/// Writes `files` as the whole content of the volume at `dir` (an existing real
/// directory). Returns false when the content was already exactly that.
pub fn write(dir: &Path, files: &[File]) -> anyhow::Result<bool> {
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.file_type().is_dir() {
        bail!(
            "{} is not a directory; refusing to write through it",
            dir.display()
        );
    }
    let mut wanted = BTreeMap::new();
    for file in files {
        validate_path(&file.path)?;
        if wanted
            .insert(file.path.clone(), (file.data.clone(), file.mode & 0o7777))
            .is_some()
        {
            bail!("path {:?} is given twice", file.path);
        }
    }
    let top: BTreeSet<&str> = files.iter().map(|f| top_level(&f.path)).collect();
    // Everything that could stop the swap half way is checked before it.
    for name in &top {
        let link = dir.join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if !m.file_type().is_symlink() => {
                bail!(
                    "{} is not the agent's symlink; refusing to replace it",
                    link.display()
                )
            }
            _ => {}
        }
    }
    let old = current_data(dir)?;
    if let Some(old) = &old
        && read_set(&dir.join(old)).is_ok_and(|set| set == wanted)
    {
        link_top_level(dir, &top)?;
        return Ok(false);
    }

    let (stamp, stamped) = new_stamped_dir(dir)?;
    if let Err(e) = fill(&stamped, files) {
        let _ = std::fs::remove_dir_all(&stamped);
        return Err(e);
    }
    let tmp = dir.join(DATA_TMP);
    match std::fs::symlink_metadata(&tmp) {
        Ok(m) if m.file_type().is_symlink() => std::fs::remove_file(&tmp)?,
        Ok(_) => bail!("{} is not a symlink; refusing the volume", tmp.display()),
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&stamp, &tmp)?;
    // The atomic step: readers resolve `..data` to the old set or the new one.
    std::fs::rename(&tmp, dir.join(DATA))?;
    link_top_level(dir, &top)?;
    remove_stale(dir, &top, &stamp)?;
    Ok(true)
}

fn new_stamped_dir(dir: &Path) -> anyhow::Result<(String, PathBuf)> {
    for _ in 0..16 {
        let now = crate::clock::timestamp();
        let stamp = format!(
            "..{}.{:09}",
            now.strftime("%Y_%m_%d_%H_%M_%S"),
            now.subsec_nanosecond()
        );
        let path = dir.join(&stamp);
        match std::fs::DirBuilder::new().mode(0o755).create(&path) {
            Ok(()) => {
                // The umask must not narrow it.
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
                return Ok((stamp, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e.into()),
        }
    }
    bail!("could not make a new timestamped directory in {}", dir.display())
}

fn fill(stamped: &Path, files: &[File]) -> anyhow::Result<()> {
    for file in files {
        let target = stamped.join(&file.path);
        if let Some(parent) = target.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(parent)?;
        }
        let mut out = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(file.mode & 0o7777)
            .open(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        out.write_all(&file.data)?;
        // Explicit, as upstream does: the umask must not change the mode.
        out.set_permissions(std::fs::Permissions::from_mode(file.mode & 0o7777))?;
        out.sync_all()?;
    }
    Ok(())
}

/// Creates `name -> ..data/name` for each top-level name that lacks it.
fn link_top_level(dir: &Path, top: &BTreeSet<&str>) -> anyhow::Result<()> {
    for name in top {
        let link = dir.join(name);
        let wanted = Path::new(DATA).join(name);
        match std::fs::symlink_metadata(&link) {
            Ok(m) if m.file_type().is_symlink() => {
                if std::fs::read_link(&link)? != wanted {
                    // Replacing a link does not follow it.
                    std::fs::remove_file(&link)?;
                    std::os::unix::fs::symlink(&wanted, &link)?;
                }
            }
            Ok(_) => bail!("{} is not the agent's symlink", link.display()),
            Err(_) => std::os::unix::fs::symlink(&wanted, &link)?,
        }
    }
    Ok(())
}

/// Removes user-visible links the new set no longer has and every timestamped directory
/// but the current one (the previous one, or leftovers of a crash).
fn remove_stale(dir: &Path, top: &BTreeSet<&str>, current: &str) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type()?;
        if name.starts_with("..") {
            if name != DATA && name != DATA_TMP && name != current && kind.is_dir() {
                // remove_dir_all does not follow symlinks inside.
                std::fs::remove_dir_all(entry.path())?;
            }
        } else if kind.is_symlink()
            && !top.contains(name.as_str())
            && std::fs::read_link(entry.path())?.starts_with(DATA)
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn file(path: &str, data: &[u8], mode: u32) -> File {
        File {
            path: path.into(),
            data: data.to_vec(),
            mode,
        }
    }

    fn volume() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = ensure_dir(root.path(), &["pods", "uid", "vol"]).unwrap();
        (root, dir)
    }

    #[test]
    fn layout_swap_and_cleanup() {
        let (_root, vol) = volume();
        let first = [
            file("token", b"one", 0o644),
            file("ca.crt", b"ca", 0o644),
            file("nested/dir/f", b"n", 0o600),
        ];
        assert!(write(&vol, &first).unwrap());
        let data = std::fs::read_link(vol.join("..data")).unwrap();
        assert!(data.to_string_lossy().starts_with("..20"), "{data:?}");
        assert_eq!(
            std::fs::read_link(vol.join("token")).unwrap(),
            Path::new("..data/token")
        );
        assert_eq!(
            std::fs::read_link(vol.join("nested")).unwrap(),
            Path::new("..data/nested")
        );
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"one");
        assert_eq!(std::fs::read(vol.join("nested/dir/f")).unwrap(), b"n");
        let mode = |p: &str| std::fs::metadata(vol.join(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode("token"), 0o644);
        assert_eq!(mode("nested/dir/f"), 0o600);
        assert_eq!(mode(data.to_str().unwrap()), 0o755);

        // The same content is not rewritten.
        assert!(!write(&vol, &first).unwrap());
        assert_eq!(std::fs::read_link(vol.join("..data")).unwrap(), data);

        assert!(write(&vol, &[file("token", b"two", 0o400)]).unwrap());
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"two");
        assert_eq!(mode("token"), 0o400);
        assert!(!vol.join(&data).exists(), "the old directory is removed");
        for gone in ["ca.crt", "nested"] {
            assert!(
                std::fs::symlink_metadata(vol.join(gone)).is_err(),
                "{gone} is no longer in the set"
            );
        }
        assert!(std::fs::symlink_metadata(vol.join("..data_tmp")).is_err());
        let hidden: Vec<_> = std::fs::read_dir(&vol)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..20"))
            .collect();
        assert_eq!(hidden.len(), 1, "{hidden:?}");
    }

    #[test]
    fn readers_never_see_a_mix() {
        let (_root, vol) = volume();
        write(&vol, &[file("a", b"0", 0o644), file("b", b"0", 0o644)]).unwrap();
        let reader = {
            let vol = vol.clone();
            std::thread::spawn(move || {
                for _ in 0..2000 {
                    // Resolve `..data` once, as a careful reader does, and read both files.
                    let Ok(data) = std::fs::read_link(vol.join("..data")) else {
                        continue;
                    };
                    let a = std::fs::read(vol.join(&data).join("a"));
                    let b = std::fs::read(vol.join(&data).join("b"));
                    if let (Ok(a), Ok(b)) = (a, b) {
                        assert_eq!(a, b, "a mixed set");
                    }
                }
            })
        };
        for i in 1..200u32 {
            let v = i.to_string();
            write(
                &vol,
                &[file("a", v.as_bytes(), 0o644), file("b", v.as_bytes(), 0o644)],
            )
            .unwrap();
        }
        reader.join().unwrap();
        assert_eq!(std::fs::read(vol.join("a")).unwrap(), b"199");
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "..data", "..x/y", "./a"] {
            assert!(validate_path(bad).is_err(), "{bad:?}");
        }
        assert!(validate_path(&"x".repeat(256)).is_err());
        for good in ["token", "a/b/c", "a..b", ".hidden"] {
            validate_path(good).unwrap();
        }
        for bad in ["", ".", "..", "a/b"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
        let (_root, vol) = volume();
        assert!(write(&vol, &[file("a", b"1", 0o644), file("a", b"2", 0o644)]).is_err());
    }

    #[test]
    fn planted_files_and_links_are_never_followed() {
        let (root, vol) = volume();
        let outside = root.path().join("outside");
        std::fs::create_dir(&outside).unwrap();

        // A regular file where the agent's link belongs: refused, untouched.
        std::fs::write(vol.join("token"), b"planted").unwrap();
        assert!(write(&vol, &[file("token", b"t", 0o644)]).is_err());
        assert_eq!(std::fs::read(vol.join("token")).unwrap(), b"planted");
        assert!(std::fs::symlink_metadata(vol.join("..data")).is_err());
        std::fs::remove_file(vol.join("token")).unwrap();

        // `..data` pointing outside the volume: refused.
        std::os::unix::fs::symlink(&outside, vol.join("..data")).unwrap();
        assert!(write(&vol, &[file("token", b"t", 0o644)]).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        std::fs::remove_file(vol.join("..data")).unwrap();

        // The volume directory itself swapped for a link: refused, nothing written outside.
        let pods = root.path().join("pods").join("uid");
        std::fs::remove_dir_all(&vol).unwrap();
        std::os::unix::fs::symlink(&outside, &vol).unwrap();
        assert!(write(&vol, &[file("token", b"t", 0o644)]).is_err());
        assert!(ensure_dir(root.path(), &["pods", "uid", "vol"]).is_err());
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        assert!(pods.exists());
    }
}
