//! What the playbook directory holds: the playbooks at its top, and a hash of the modules
//! beneath it (an edit of a module gives every playbook a new version).
//!
//! The directory may be a Kubernetes ConfigMap volume. The kubelet keeps the files in a
//! folder `..<timestamp>`, points the link `..data` at it, and shows each key as a link
//! into `..data` (`outage.rhai`, `lib`); an update writes a new folder and swaps the link.
//! Entries whose names start with `..` are the kubelet's own and are never read — the
//! links are — so a playbook's version depends on what the files say, not on which
//! `..<timestamp>` holds them, and `lib` (a link to a directory inside the playbook
//! directory that makes no loop) is a module directory like any other.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

use super::TESTS_DIR;

/// The kubelet's own entries in a ConfigMap volume (`..data`, `..<timestamp>`,
/// `..data_tmp`); no playbook or module is named so.
fn kubelet_internal(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with(".."))
}

/// `NAME.rhai` files directly in `dir`. Subdirectories hold modules and tests.
pub(super) fn scan(dir: &Path) -> std::io::Result<BTreeMap<String, PathBuf>> {
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        // `metadata` follows a link; only a regular file is read (a FIFO would block).
        let regular = std::fs::metadata(&path).is_ok_and(|m| m.is_file());
        if !regular
            || kubelet_internal(&path)
            || path.extension().and_then(|e| e.to_str()) != Some("rhai")
        {
            continue;
        }
        if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
            out.insert(stem.to_string(), path);
        }
    }
    Ok(out)
}

/// Hash of every `.rhai` file in subdirectories (modules playbooks may import), each by
/// the path a playbook imports it by: a module edit gives every playbook a new version,
/// and recompiles them all. `tests/` holds playbook tests, which no playbook imports:
/// editing a test changes no version.
///
/// Only regular files are read (a FIFO would block the reload forever). A link to a
/// directory is followed when it leads inside the playbook directory without making a
/// loop (a ConfigMap's `lib`), once per directory however many paths lead to it; a link
/// back into its own ancestors is a loop and one out of the tree an escape: each such entry
/// comes back as a problem naming its path.
pub(super) fn hash_modules(dir: &Path) -> (String, Vec<(PathBuf, String)>) {
    let root = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let mut files = Vec::new();
    let mut problems = Vec::new();
    let mut visited: HashSet<PathBuf> = HashSet::from([root.clone()]);
    // (the path as seen from `dir`, its real location)
    let mut stack = vec![(dir.to_path_buf(), root.clone())];
    while let Some((d, d_real)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        // In name order, so which of two paths to one directory is read is always the same.
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            if kubelet_internal(&path) {
                continue;
            }
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let is_rhai = path.extension().and_then(|e| e.to_str()) == Some("rhai");
            let top_level = d == dir;
            if kind.is_dir() {
                let tests = top_level && path.file_name() == Some(std::ffi::OsStr::new(TESTS_DIR));
                let real = d_real.join(entry.file_name());
                if !tests && visited.insert(real.clone()) {
                    stack.push((path, real));
                }
            } else if kind.is_symlink() {
                match (std::fs::metadata(&path), path.canonicalize()) {
                    (Ok(m), Ok(real)) if m.is_dir() => {
                        let tests =
                            top_level && path.file_name() == Some(std::ffi::OsStr::new(TESTS_DIR));
                        if tests {
                        } else if !real.starts_with(&root) {
                            problems.push((path, "a link to a directory outside the playbook directory; links leading out are not followed".to_string()));
                        } else if d_real.starts_with(&real) {
                            problems.push((
                                path,
                                "a link to a directory that contains it (a loop); not followed"
                                    .to_string(),
                            ));
                        } else if visited.insert(real.clone()) {
                            stack.push((path, real));
                        }
                        // else: a directory already read through another path.
                    }
                    (Ok(m), Ok(real)) if m.is_file() && real.starts_with(&root) => {
                        if !top_level && is_rhai {
                            files.push(path);
                        }
                    }
                    (Ok(m), Ok(_)) if m.is_file() => {
                        if is_rhai {
                            problems.push((
                                path,
                                "a link leading outside the playbook directory; not read".into(),
                            ));
                        }
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        if is_rhai || e.raw_os_error() == Some(40) {
                            problems.push((path, format!("a broken or looping link: {e}")));
                        }
                    }
                    _ => {
                        if is_rhai {
                            problems.push((path, "not a regular file; not read".into()));
                        }
                    }
                }
            } else if kind.is_file() {
                if !top_level && is_rhai {
                    files.push(path);
                }
            } else if is_rhai {
                problems.push((
                    path,
                    "not a regular file (a FIFO, socket or device); not read".into(),
                ));
            }
        }
    }
    files.sort();
    problems.sort();
    let mut hasher = Sha256::new();
    for f in files {
        // By its path inside the playbook directory: the same tree gives the same hash
        // wherever it is mounted.
        let shown = f.strip_prefix(dir).unwrap_or(&f);
        hasher.update(shown.to_string_lossy().as_bytes());
        hasher.update(std::fs::read(&f).unwrap_or_default());
    }
    (hex::encode(hasher.finalize()), problems)
}
