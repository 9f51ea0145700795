//! The image library against real qemu-img and damaged inputs (imports
//! from URLs are tested with the real downloader in nasvisor-download).

use nasvisor_storage::{Expected, ImageLibrary, ImageSpec, Pool, StorageError};
use std::path::{Path, PathBuf};
use std::process::Command;

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A 4 MiB raw disk with an MBR signature and a data pattern at 1 MiB.
fn raw_disk(dir: &Path) -> PathBuf {
    let p = dir.join("disk.raw");
    let mut b = vec![0u8; 4 << 20];
    b[510] = 0x55;
    b[511] = 0xaa;
    b[1 << 20..(1 << 20) + 4096].fill(0x5a);
    std::fs::write(&p, b).unwrap();
    p
}

fn convert(src: &Path, fmt: &str) -> PathBuf {
    let dst = src.with_extension(fmt);
    assert!(Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", fmt])
        .arg(src)
        .arg(&dst)
        .status()
        .unwrap()
        .success());
    dst
}

/// A minimal ISO 9660 image: the primary volume descriptor signature at 0x8001.
fn iso(dir: &Path) -> PathBuf {
    let p = dir.join("inst.iso");
    let mut b = vec![0u8; 64 * 2048];
    b[0x8000] = 1;
    b[0x8001..0x8006].copy_from_slice(b"CD001");
    std::fs::write(&p, b).unwrap();
    p
}

#[test]
fn add_each_format_list_get_delete() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let raw = raw_disk(src.path());
    for fmt in ["raw", "qcow2", "vmdk", "vdi"] {
        let f = if fmt == "raw" {
            raw.clone()
        } else {
            convert(&raw, fmt)
        };
        let img = lib
            .add_file(&format!("img-{fmt}"), &f, ImageSpec::default(), |_, _| {})
            .unwrap();
        assert_eq!(img.format, "qcow2");
        assert_eq!(img.source_format, fmt);
        assert_eq!(img.virtual_size, 4 << 20);
        assert_eq!(img.source_bytes, std::fs::metadata(&f).unwrap().len());
    }
    let i = lib
        .add_file(
            "installer",
            &iso(src.path()),
            ImageSpec {
                cloud_init: false,
                ..ImageSpec::default()
            },
            |_, _| {},
        )
        .unwrap();
    assert_eq!(i.format, "iso");
    let names: Vec<_> = lib.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        ["img-qcow2", "img-raw", "img-vdi", "img-vmdk", "installer"]
    );
    assert!(matches!(
        lib.add_file("img-raw", &raw, ImageSpec::default(), |_, _| {}),
        Err(StorageError::Exists { .. })
    ));

    // A volume can be a linked clone of a library image and sees its data.
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = Pool::open("p", pool_dir.path()).unwrap();
    let img = lib.get("img-vmdk").unwrap();
    let vol = pool
        .create_overlay("vm1-disk", &img.path, Some(8 << 20))
        .unwrap();
    let out = Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", "read -P 0x5a 1M 4k"])
        .arg(&vol.path)
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&out.stdout).contains("failed"));

    lib.delete("img-raw").unwrap();
    assert!(matches!(
        lib.get("img-raw"),
        Err(StorageError::NotFound { .. })
    ));
    assert!(!files(lib_dir.path())
        .iter()
        .any(|f| f.starts_with("img-raw")));
}

#[test]
fn bad_images_are_refused_and_leave_nothing() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();

    let text = src.path().join("notes.txt");
    std::fs::write(&text, "this is not a disk image\n").unwrap();
    let e = lib
        .add_file("a", &text, ImageSpec::default(), |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("not a recognised disk image"), "{e}");

    let q = convert(&raw_disk(src.path()), "qcow2");
    let len = std::fs::metadata(&q).unwrap().len();
    let cut = src.path().join("cut.qcow2");
    std::fs::write(&cut, &std::fs::read(&q).unwrap()[..(len / 2) as usize]).unwrap();
    let e = lib
        .add_file("b", &cut, ImageSpec::default(), |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("damaged or truncated"), "{e}");

    // An upload that stops early.
    let data = std::fs::read(&q).unwrap();
    let e = lib
        .add_reader(
            "c",
            &data[..1000],
            Expected {
                len: Some(data.len() as u64),
                sha256: None,
            },
            "upload",
            ImageSpec::default(),
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.contains("truncated: received 1000"), "{e}");

    let e = lib
        .add_file(
            "d",
            &q,
            ImageSpec {
                firmware: "coreboot".into(),
                ..ImageSpec::default()
            },
            |_, _| {},
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("firmware:"), "{e}");
    let e = lib
        .add_file("../e", &q, ImageSpec::default(), |_, _| {})
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("image name:"), "{e}");

    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
}
