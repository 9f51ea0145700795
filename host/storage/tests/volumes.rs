//! Pools and volumes against the real qemu-img (and qemu-io to write and
//! read guest data).

use nasvisor_storage::{Pool, SnapshotOp, StorageError};
use std::path::Path;
use std::process::Command;

const MIB: u64 = 1 << 20;

fn pool() -> (tempfile::TempDir, Pool) {
    let dir = tempfile::tempdir().unwrap();
    let p = Pool::open("test", dir.path()).unwrap();
    (dir, p)
}

/// Runs qemu-io commands on an image; panics with its output on failure.
fn qemu_io(path: &Path, format: &str, cmd: &str) -> String {
    let out = Command::new("qemu-io")
        .args(["-f", format, "-c", cmd])
        .arg(path)
        .output()
        .expect("qemu-io (qemu-utils) is installed");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "qemu-io {cmd}: {text}");
    text
}

fn pattern_ok(path: &Path, format: &str, pattern: u8, offset: u64, len: u64) -> bool {
    !qemu_io(
        path,
        format,
        &format!("read -P {pattern:#x} {offset} {len}"),
    )
    .contains("Pattern verification failed")
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn create_list_resize_delete() {
    let (_d, p) = pool();
    let v = p.create("disk1", 64 * MIB).unwrap();
    assert_eq!(v.virtual_size, 64 * MIB);
    assert!(v.path.starts_with(p.dir()));
    p.create("disk0", 8 * MIB).unwrap();
    let names: Vec<_> = p.volumes().unwrap().into_iter().map(|v| v.name).collect();
    assert_eq!(names, ["disk0", "disk1"]);

    let e = p.create("disk1", 8 * MIB).unwrap_err();
    assert!(matches!(e, StorageError::Exists { .. }), "{e}");

    assert_eq!(
        p.resize("disk1", 128 * MIB).unwrap().virtual_size,
        128 * MIB
    );
    let e = p.resize("disk1", 32 * MIB).unwrap_err().to_string();
    assert!(e.contains("shrink"), "{e}");
    assert_eq!(
        p.volume("disk1").unwrap().virtual_size,
        128 * MIB,
        "unchanged"
    );

    // A replica server's probe file beside a volume goes with it.
    let probe = p.dir().join("disk0.qcow2.probe");
    std::fs::write(&probe, b"").unwrap();
    p.delete("disk0").unwrap();
    assert!(!probe.exists(), "the probe file is deleted with its volume");
    assert!(matches!(
        p.delete("disk0"),
        Err(StorageError::NotFound { .. })
    ));
    let u = p.usage().unwrap();
    assert!(u.capacity_bytes > 0 && u.free_bytes <= u.capacity_bytes);
}

#[test]
fn bad_names_and_sizes_change_nothing() {
    let (d, p) = pool();
    for bad in ["../escape", "a/b", "..", ".hidden", "-x", ""] {
        let e = p.create(bad, 8 * MIB).unwrap_err().to_string();
        assert!(e.starts_with("volume name:"), "{bad:?}: {e}");
    }
    for size in [0, 1000, 65 << 40] {
        let e = p.create("ok", size).unwrap_err().to_string();
        assert!(e.starts_with("size:"), "{size}: {e}");
    }
    assert!(files(d.path()).is_empty(), "{:?}", files(d.path()));
    assert!(Pool::open("p", Path::new("relative/dir")).is_err());
    assert!(Pool::open("../p", d.path()).is_err());
}

#[test]
fn snapshots_revert_guest_data() {
    let (_d, p) = pool();
    let v = p.create("vol", 16 * MIB).unwrap();
    qemu_io(&v.path, "qcow2", "write -P 0xaa 0 64k");
    let v = p.snapshot("vol", SnapshotOp::Create, "before").unwrap();
    assert_eq!(v.snapshots.len(), 1);
    assert_eq!(v.snapshots[0].name, "before");
    qemu_io(&v.path, "qcow2", "write -P 0xbb 0 64k");
    assert!(pattern_ok(&v.path, "qcow2", 0xbb, 0, 65536));
    p.snapshot("vol", SnapshotOp::Apply, "before").unwrap();
    assert!(pattern_ok(&v.path, "qcow2", 0xaa, 0, 65536), "reverted");
    assert!(matches!(
        p.snapshot("vol", SnapshotOp::Create, "before"),
        Err(StorageError::Exists { .. })
    ));
    assert!(matches!(
        p.snapshot("vol", SnapshotOp::Apply, "nope"),
        Err(StorageError::NotFound { .. })
    ));
    let e = p.resize("vol", 32 * MIB).unwrap_err().to_string();
    assert!(e.contains("snapshots"), "{e}");
    assert!(p
        .snapshot("vol", SnapshotOp::Delete, "before")
        .unwrap()
        .snapshots
        .is_empty());
}

#[test]
fn linked_and_full_clones() {
    let (_d, p) = pool();
    let base = p.create("base", 16 * MIB).unwrap();
    qemu_io(&base.path, "qcow2", "write -P 0x11 0 64k");
    let linked = p.clone_volume("base", "linked", true).unwrap();
    assert_eq!(
        linked.backing_file.as_deref(),
        Some(base.path.to_str().unwrap())
    );
    let full = p.clone_volume("base", "full", false).unwrap();
    assert_eq!(full.backing_file, None);
    for v in [&linked, &full] {
        assert!(pattern_ok(&v.path, "qcow2", 0x11, 0, 65536), "{}", v.name);
    }
    // Writes to a clone do not reach the base.
    qemu_io(&linked.path, "qcow2", "write -P 0x22 0 64k");
    assert!(pattern_ok(&base.path, "qcow2", 0x11, 0, 65536));
    // An overlay may be larger than its base, never smaller.
    let big = p.create_overlay("big", &base.path, Some(32 * MIB)).unwrap();
    assert_eq!(big.virtual_size, 32 * MIB);
    assert!(p
        .create_overlay("small", &base.path, Some(8 * MIB))
        .is_err());
}

#[test]
fn import_each_format_and_keep_the_data() {
    let (src_dir, _) = pool();
    let (_d, p) = pool();
    let raw = src_dir.path().join("src.raw");
    std::fs::write(&raw, vec![0u8; 4 * MIB as usize]).unwrap();
    qemu_io(&raw, "raw", "write -P 0x5a 1M 64k");
    for fmt in ["raw", "qcow2", "vmdk", "vdi"] {
        let src = if fmt == "raw" {
            raw.clone()
        } else {
            let f = src_dir.path().join(format!("src.{fmt}"));
            let st = Command::new("qemu-img")
                .args(["convert", "-f", "raw", "-O", fmt])
                .arg(&raw)
                .arg(&f)
                .status()
                .unwrap();
            assert!(st.success());
            f
        };
        let mut last = 0.0;
        let v = p.import(&format!("imp-{fmt}"), &src, |x| last = x).unwrap();
        assert_eq!(last, 100.0);
        assert_eq!(v.virtual_size, 4 * MIB, "{fmt}");
        assert!(pattern_ok(&v.path, "qcow2", 0x5a, MIB, 65536), "{fmt}");
    }
}

#[test]
fn damaged_images_are_refused_and_leave_nothing() {
    let (src_dir, _) = pool();
    let (d, p) = pool();
    // Not an image at all (a text file is "raw" to qemu-img, but empty is refused).
    let empty = src_dir.path().join("empty.img");
    std::fs::write(&empty, b"").unwrap();
    let e = p.import("a", &empty, |_| {}).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");

    // A truncated qcow2: header intact, data clusters cut off.
    let q = src_dir.path().join("t.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&q)
        .arg("8M")
        .status()
        .unwrap()
        .success());
    qemu_io(&q, "qcow2", "write -P 0x77 0 4M");
    let len = std::fs::metadata(&q).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(&q).unwrap();
    f.set_len(len / 3).unwrap();
    drop(f);
    let e = p.import("b", &q, |_| {}).unwrap_err().to_string();
    assert!(
        e.contains("damaged or truncated") || e.contains("not a readable"),
        "{e}"
    );

    // A qcow2 with a backing file could read any host file: refused.
    let base = src_dir.path().join("base.qcow2");
    let over = src_dir.path().join("over.qcow2");
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&base)
        .arg("8M")
        .status()
        .unwrap()
        .success());
    assert!(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&base)
        .arg(&over)
        .status()
        .unwrap()
        .success());
    let e = p.import("c", &over, |_| {}).unwrap_err().to_string();
    assert!(e.contains("backing file"), "{e}");

    // A missing file.
    let e = p
        .import("d", &src_dir.path().join("nope"), |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope"), "{e}");

    assert!(
        files(d.path()).is_empty(),
        "nothing left: {:?}",
        files(d.path())
    );
}

#[test]
fn temporaries_of_a_crash_are_cleaned() {
    let (d, p) = pool();
    std::fs::write(d.path().join(".vol.qcow2.tmp-12345"), b"half").unwrap();
    p.create("kept", 8 * MIB).unwrap();
    assert_eq!(p.clean_temporaries().unwrap(), 1);
    assert_eq!(files(d.path()), ["kept.qcow2"]);
}

#[test]
fn a_cancelled_import_stops_qemu_img_and_leaves_nothing() {
    let (src_dir, _) = pool();
    let (d, p) = pool();
    let src = src_dir.path().join("big.raw");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(256 * MIB).unwrap();
    let e = p
        .import_cancellable("never", &src, |_| {}, &|| true)
        .unwrap_err();
    assert!(
        matches!(e, nasvisor_storage::StorageError::Cancelled { .. }),
        "{e}"
    );
    assert!(p.volume("never").is_err());
    let left: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn volumes_are_private_from_their_creation_and_a_pool_is_made_private() {
    let (src_dir, _) = pool();
    let (d, p) = pool();
    let raw = src_dir.path().join("src.raw");
    std::fs::write(&raw, vec![0u8; MIB as usize]).unwrap();
    let made = [
        p.create("new", 8 * MIB).unwrap(),
        p.import("imported", &raw, |_| {}).unwrap(),
        p.clone_volume("new", "full", false).unwrap(),
        p.clone_volume("new", "linked", true).unwrap(),
    ];
    for v in &made {
        assert_eq!(mode(&v.path), 0o600, "{}", v.name);
    }
    // A pool of an older release: open directory, readable volumes.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&made[0].path, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(d.path().join("notes.txt"), b"not a volume").unwrap();
    std::fs::set_permissions(
        d.path().join("notes.txt"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(p.make_private().unwrap(), 2);
    assert_eq!(mode(d.path()), 0o700);
    assert_eq!(mode(&made[0].path), 0o600);
    assert_eq!(
        mode(&d.path().join("notes.txt")),
        0o644,
        "not ours: left alone"
    );
}

#[test]
fn a_file_with_an_external_data_file_in_a_pool_is_not_used_as_a_volume() {
    let (src_dir, _) = pool();
    let (d, p) = pool();
    // Dropped into the pool directory by something other than nasvisor.
    let secret = src_dir.path().join("secret");
    std::fs::write(&secret, vec![7u8; MIB as usize]).unwrap();
    let scratch = src_dir.path().join("scratch");
    let evil = d.path().join("evil.qcow2");
    let st = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-o"])
        .arg(format!("data_file={},data_file_raw=on", scratch.display()))
        .arg(&evil)
        .arg("1M")
        .status()
        .unwrap();
    assert!(st.success());
    let st = Command::new("qemu-img")
        .args(["amend", "-f", "qcow2", "-o"])
        .arg(format!("data_file={}", secret.display()))
        .arg(&evil)
        .status()
        .unwrap();
    assert!(st.success());
    let e = p.volume("evil").unwrap_err().to_string();
    assert!(e.contains("external data file"), "{e}");
    let e = p
        .clone_volume("evil", "copy", false)
        .unwrap_err()
        .to_string();
    assert!(e.contains("external data file"), "{e}");
    let e = p
        .create_overlay("over", &evil, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("external data file"), "{e}");
    assert!(p.volumes().unwrap().is_empty(), "not listed");
    p.delete("evil").unwrap();
    assert!(files(d.path()).is_empty());
}

#[test]
fn an_image_another_process_has_open_is_busy_not_a_failure() {
    // benches/fuzz-api.sh found it: a snapshot revert while another
    // operation had the volume open failed as an internal error (500).
    let (_d, p) = pool();
    let v = p.create("vol", 16 * MIB).unwrap();
    p.snapshot("vol", SnapshotOp::Create, "before").unwrap();
    // qemu-io holds the image open read-write (its lock) until its standard
    // input closes.
    let mut holder = Command::new("qemu-io")
        .args(["-f", "qcow2"])
        .arg(&v.path)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let e = loop {
        match p.snapshot("vol", SnapshotOp::Apply, "before") {
            Err(e @ StorageError::Busy { .. }) => break e,
            Ok(_) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "qemu-io never took the image's lock"
                );
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("not reported as busy: {e}"),
        }
    };
    assert!(e.to_string().contains("in use"), "{e}");
    assert!(matches!(
        p.snapshot("vol", SnapshotOp::Create, "during"),
        Err(StorageError::Busy { .. })
    ));
    holder.kill().unwrap();
    holder.wait().unwrap();
    p.snapshot("vol", SnapshotOp::Apply, "before").unwrap();
}
