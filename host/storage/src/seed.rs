//! cloud-init NoCloud seed volumes: a small VFAT filesystem labelled
//! `cidata` holding `meta-data`, `user-data` and optionally
//! `network-config` and `vendor-data`, built without mounting anything
//! (`mkfs.vfat` + `mcopy` from mtools).
//!
//! A seed holds password hashes and SSH keys: it is built in a staging
//! directory of mode 0700 whose files are 0600 from their creation (the
//! tools run with umask 077), and the seed image is 0600.

use crate::error::StorageError;
use crate::limits::{self, Limits};
use crate::private;
use std::io::Write;
use std::path::Path;
use std::process::Command;

/// The files a NoCloud seed may hold.
pub const SEED_FILES: [&str; 4] = ["meta-data", "user-data", "network-config", "vendor-data"];

/// Size of the seed filesystem.
const SEED_KIB: u64 = 2048;

/// A command for `tool`, under the memory limit and umask 077.
fn tool(name: &str) -> Command {
    limits::command(Path::new(name), Limits::default().memory_bytes, None)
}

fn run(op: &'static str, cmd: &mut Command) -> Result<(), StorageError> {
    let out = cmd.output().map_err(|e| StorageError::QemuImg {
        op,
        stderr: format!("cannot run: {e} (is dosfstools/mtools installed? run scripts/setup.sh)"),
    })?;
    if !out.status.success() {
        return Err(StorageError::QemuImg {
            op,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Writes a raw VFAT seed image at `out` (replacing nothing: `out` must not
/// exist). On failure nothing is left at `out`.
pub fn build_nocloud_seed(files: &[(&str, &str)], out: &Path) -> Result<(), StorageError> {
    let mut seen = Vec::new();
    let mut total = 0usize;
    for (name, contents) in files {
        if !SEED_FILES.contains(name) {
            return Err(StorageError::BadSize {
                field: "seed",
                reason: format!("{name:?} is not a NoCloud file ({})", SEED_FILES.join(", ")),
            });
        }
        if seen.contains(name) {
            return Err(StorageError::BadSize {
                field: "seed",
                reason: format!("{name:?} appears twice"),
            });
        }
        seen.push(*name);
        total += contents.len();
    }
    if !seen.contains(&"meta-data") || !seen.contains(&"user-data") {
        return Err(StorageError::BadSize {
            field: "seed",
            reason: "meta-data and user-data are required".into(),
        });
    }
    if total as u64 > (SEED_KIB - 256) * 1024 {
        return Err(StorageError::BadSize {
            field: "seed",
            reason: format!("{total} bytes do not fit a {SEED_KIB} KiB seed"),
        });
    }
    if out.exists() {
        return Err(StorageError::Exists {
            what: "seed image",
            name: out.display().to_string(),
        });
    }
    let dir = out.parent().unwrap_or(Path::new("."));
    let staging = tempfile_dir(dir)?;
    let result = (|| {
        let img = staging.join("seed.img");
        run(
            "mkfs.vfat",
            tool("mkfs.vfat")
                .args(["-n", "CIDATA", "-C"])
                .arg(&img)
                .arg(SEED_KIB.to_string()),
        )?;
        for (name, contents) in files {
            let f = staging.join(name);
            let mut h = private::create_file(&f)?;
            h.write_all(contents.as_bytes())
                .map_err(|e| StorageError::io(&f, e))?;
            run(
                "mcopy",
                tool("mcopy")
                    .arg("-i")
                    .arg(&img)
                    .arg(&f)
                    .arg(format!("::{name}")),
            )?;
        }
        private::set_mode(&img, private::FILE_MODE)?;
        std::fs::rename(&img, out).map_err(|e| StorageError::io(out, e))
    })();
    nasvisor_best_effort::remove_dir_all(&staging);
    result
}

fn tempfile_dir(parent: &Path) -> Result<std::path::PathBuf, StorageError> {
    use std::os::unix::fs::DirBuilderExt;
    let d = parent.join(format!(".seed-{}-{}", std::process::id(), rand_suffix()));
    std::fs::DirBuilder::new()
        .mode(private::DIR_MODE)
        .create(&d)
        .map_err(|e| StorageError::io(&d, e))?;
    Ok(d)
}

fn rand_suffix() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    h.finish()
}
