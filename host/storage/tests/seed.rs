//! NoCloud seed images, read back with mtools and blkid.

use nasvisor_storage::seed::build_nocloud_seed;
use std::process::Command;

#[test]
fn seed_has_the_label_and_the_files() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("seed.img");
    let user = "#cloud-config\nhostname: \"web1\"\n";
    build_nocloud_seed(
        &[
            ("meta-data", "instance-id: i-1\nlocal-hostname: web1\n"),
            ("user-data", user),
        ],
        &out,
    )
    .unwrap();
    let label = Command::new("blkid")
        .args(["-o", "value", "-s", "LABEL"])
        .arg(&out)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "CIDATA");
    let t = Command::new("mtype")
        .arg("-i")
        .arg(&out)
        .arg("::user-data")
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&t.stdout), user);
    let dir: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(dir, ["seed.img"], "no staging left");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the seed holds password hashes and keys");
}

#[test]
fn bad_seeds_are_refused_and_leave_nothing() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("seed.img");
    for (files, needle) in [
        (vec![("meta-data", "x")], "required"),
        (
            vec![("meta-data", "x"), ("user-data", "y"), ("../etc", "z")],
            "not a NoCloud file",
        ),
        (
            vec![("meta-data", "x"), ("meta-data", "x"), ("user-data", "y")],
            "twice",
        ),
    ] {
        let e = build_nocloud_seed(&files, &out).unwrap_err().to_string();
        assert!(e.starts_with("seed:") && e.contains(needle), "{e}");
    }
    let big = "x".repeat(4 << 20);
    assert!(build_nocloud_seed(&[("meta-data", "x"), ("user-data", &big)], &out).is_err());
    assert!(std::fs::read_dir(d.path()).unwrap().next().is_none());
}
