//! Which directories may become a pool.
//!
//! Creating a pool makes its directory 0700 and its volumes 0600, and from
//! then on every `*.qcow2` file in it is a volume that `volume delete` may
//! remove. So a pool may not be a directory that holds anything else, and
//! never a system directory: a request naming `/`, `/etc` or `/var/lib`
//! would otherwise take the system's directories away from every other
//! user and service. Incus refuses a non-empty source directory in the
//! same way.

use crate::error::StorageError;
use std::path::{Component, Path};

/// Directories of the file-system hierarchy that are never a pool, nor
/// is a directory directly under those marked `true` (`/var/lib`,
/// `/usr/share`, ...). A pool goes below them: `/srv/vms`, `/mnt/tank/vms`,
/// `/var/lib/nasvisor/pools/NAME`.
const SYSTEM_DIRS: &[(&str, bool)] = &[
    ("/bin", false),
    ("/boot", true),
    ("/dev", true),
    ("/efi", true),
    ("/etc", true),
    ("/home", false),
    ("/lib", true),
    ("/lib32", true),
    ("/lib64", true),
    ("/libx32", true),
    ("/media", false),
    ("/mnt", false),
    ("/opt", false),
    ("/proc", true),
    ("/root", false),
    ("/run", true),
    ("/sbin", false),
    ("/srv", false),
    ("/sys", true),
    ("/tmp", false),
    ("/usr", true),
    ("/var", true),
];

/// Names a pool directory may already hold: volumes, what an interrupted
/// volume or seed operation leaves, and the `lost+found` of a file system
/// mounted there.
/// The suffix of a replica server's probe file beside a volume
/// (`<volume>.qcow2.probe`): the replica's health check writes there, on
/// the same disk as the replica.
pub const PROBE_SUFFIX: &str = ".qcow2.probe";

fn pool_entry(name: &str, is_dir: bool) -> bool {
    if is_dir {
        name == "lost+found" || name.starts_with(".seed-")
    } else {
        name.ends_with(".qcow2") || name.contains(".qcow2.tmp-") || name.ends_with(PROBE_SUFFIX)
    }
}

fn refuse(dir: &Path, reason: String) -> StorageError {
    StorageError::BadPoolDir {
        path: dir.to_path_buf(),
        reason,
    }
}

/// Checks that the canonical directory `dir` may become a new pool: not
/// the root or a system directory, and empty or holding only volumes.
pub fn check_new_pool_dir(dir: &Path) -> Result<(), StorageError> {
    not_a_system_dir(dir)?;
    only_volumes(dir)
}

/// Refuses the root and the system directories ([`SYSTEM_DIRS`]).
pub fn not_a_system_dir(dir: &Path) -> Result<(), StorageError> {
    if dir.parent().is_none() {
        return Err(refuse(dir, "the root directory cannot be a pool".into()));
    }
    let normal: Vec<&str> = dir
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    let top = format!("/{}", normal.first().copied().unwrap_or_default());
    if let Some((_, deep)) = SYSTEM_DIRS.iter().find(|(d, _)| *d == top) {
        if normal.len() == 1 || (*deep && normal.len() == 2) {
            return Err(refuse(
                dir,
                "is a system directory; make a directory for the pool below it \
                 (for example /srv/vms or /mnt/tank/vms)"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// Refuses a directory that holds anything but volumes (and what pool
/// operations leave).
pub fn only_volumes(dir: &Path) -> Result<(), StorageError> {
    let mut foreign = Vec::new();
    for e in std::fs::read_dir(dir).map_err(|e| StorageError::io(dir, e))? {
        let e = e.map_err(|e| StorageError::io(dir, e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
        let is_file = e.file_type().is_ok_and(|t| t.is_file());
        if !(is_dir || is_file) || !pool_entry(&name, is_dir) {
            foreign.push(name);
        }
    }
    if !foreign.is_empty() {
        foreign.sort();
        let shown: Vec<String> = foreign.iter().take(3).map(|n| format!("{n:?}")).collect();
        return Err(refuse(
            dir,
            format!(
                "holds {} entr{} that {} not volumes ({}{}); a pool takes an empty \
                 directory or one that holds only volumes (*.qcow2)",
                foreign.len(),
                if foreign.len() == 1 { "y" } else { "ies" },
                if foreign.len() == 1 { "is" } else { "are" },
                shown.join(", "),
                if foreign.len() > 3 { ", ..." } else { "" },
            ),
        ));
    }
    Ok(())
}

/// Whether the canonical directories `a` and `b` are the same or one holds
/// the other.
pub fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(dir: &Path) -> String {
        check_new_pool_dir(dir).unwrap_err().to_string()
    }

    #[test]
    fn system_directories_and_the_root_are_never_pools() {
        for d in [
            "/",
            "/etc",
            "/var",
            "/var/lib",
            "/usr/share",
            "/tmp",
            "/home",
            "/proc/self",
        ] {
            let e = refused(Path::new(d));
            assert!(e.starts_with(d), "{d}: {e}");
            assert!(
                e.contains("root directory") || e.contains("system directory"),
                "{d}: {e}"
            );
        }
    }

    #[test]
    fn an_empty_directory_or_one_of_volumes_is_a_pool_and_anything_else_is_refused() {
        let d = tempfile::tempdir().unwrap();
        check_new_pool_dir(d.path()).unwrap();
        std::fs::write(d.path().join("vm1-disk0.qcow2"), b"").unwrap();
        std::fs::write(d.path().join(".v.qcow2.tmp-12"), b"").unwrap();
        std::fs::write(d.path().join("vm1-disk0.qcow2.probe"), b"").unwrap();
        std::fs::create_dir(d.path().join("lost+found")).unwrap();
        check_new_pool_dir(d.path()).unwrap();
        std::fs::write(d.path().join("passwd"), b"").unwrap();
        std::fs::create_dir(d.path().join("notes.qcow2")).unwrap();
        let e = refused(d.path());
        assert!(e.contains("holds 2 entries that are not volumes"), "{e}");
        assert!(e.contains("\"notes.qcow2\", \"passwd\""), "{e}");
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("link.qcow2")).unwrap();
        assert!(refused(d.path()).contains("holds 3 entries"));
    }

    #[test]
    fn overlapping_directories_are_found_either_way() {
        assert!(overlaps(Path::new("/srv/a"), Path::new("/srv/a")));
        assert!(overlaps(Path::new("/srv/a/b"), Path::new("/srv/a")));
        assert!(overlaps(Path::new("/srv"), Path::new("/srv/a")));
        assert!(!overlaps(Path::new("/srv/ab"), Path::new("/srv/a")));
    }
}
