//! Each local attempt's private temporary directory, which the script gets as `TMPDIR`.
//!
//! bash writes large here-document and here-string bodies to temporary files, so values
//! can reach a disk that way; so can whatever the script's programs put in `TMPDIR`. The
//! directory is mode 0700, on a memory filesystem where one exists (`$XDG_RUNTIME_DIR`,
//! then `/dev/shm`, else the system temporary directory), and is removed with everything in
//! it when the guard drops: on success, failure, timeout, cancellation, a dropped future
//! and a panic alike. The executor drops it only after the attempt's processes are dead.

use std::io;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Where attempts' directories go: the first usable of the candidates, chosen once.
pub(crate) fn base_from(xdg_runtime_dir: Option<&Path>) -> PathBuf {
    let candidates = xdg_runtime_dir
        .into_iter()
        .map(Path::to_path_buf)
        .chain([PathBuf::from("/dev/shm")]);
    for c in candidates {
        if c.is_absolute() && writable_dir(&c) {
            return c;
        }
    }
    std::env::temp_dir()
}

fn writable_dir(p: &Path) -> bool {
    p.is_dir() && nix::unistd::access(p, nix::unistd::AccessFlags::W_OK).is_ok()
}

/// A private directory, removed on drop.
#[derive(Debug)]
pub(crate) struct TempDir {
    path: PathBuf,
}

impl TempDir {
    /// A new directory `csm.<marker>` (mode 0700) under `base`.
    pub(crate) fn create(base: &Path, marker: &str) -> io::Result<TempDir> {
        let path = base.join(format!("csm.{marker}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        // The umask can only take bits away (never make it less private); where it takes
        // some of the owner's, put them back: it must be exactly 0700.
        if *UMASK & 0o700 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))?;
        }
        Ok(TempDir { path })
    }

    /// Its path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// The process's umask, read once from /proc (`umask(2)` can only read it by changing it);
/// if that fails, taken to strip everything, so that every directory is `chmod`ed.
static UMASK: std::sync::LazyLock<u32> = std::sync::LazyLock::new(|| {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Umask:"))
                .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
        })
        .unwrap_or(0o777)
});

impl Drop for TempDir {
    fn drop(&mut self) {
        // Usually empty: one rmdir. Otherwise, everything in it.
        if std::fs::remove_dir(&self.path).is_ok() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            if e.kind() != io::ErrorKind::NotFound {
                tracing::warn!(path = %self.path.display(), error = %e, "could not remove an attempt's temporary directory");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn private_and_removed_with_its_contents() {
        let base = tempfile::tempdir().unwrap();
        let d = TempDir::create(base.path(), "abc").unwrap();
        assert_eq!(std::fs::metadata(d.path()).unwrap().mode() & 0o777, 0o700);
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/f"), b"x").unwrap();
        let p = d.path().to_path_buf();
        drop(d);
        assert!(!p.exists());
        // A name that exists already is an error, not a shared directory.
        std::fs::create_dir(base.path().join("csm.taken")).unwrap();
        assert!(TempDir::create(base.path(), "taken").is_err());
    }
}
