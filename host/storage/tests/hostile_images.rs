//! Hostile images, each built with the real `qemu-img`: images that
//! reference other files of the host (a qcow2 external data file, VMDK
//! extents and parents, backing files, also through `json:` and `nbd:`),
//! formats outside the allow-list, polyglots, and images that make
//! `qemu-img` burn CPU or memory. Each is refused with its reason by the
//! inspection, the image library (file and upload) and the pool import, and
//! leaves nothing behind.

use nasvisor_storage::{
    inspect, Expected, ImageLibrary, ImageSpec, Limits, Pool, QemuImg, SourceFormat, StorageError,
};
use std::path::{Path, PathBuf};
use std::process::Command;

/// What a host secret looks like: the test checks it never leaks.
const SECRET: &[u8] = b"root:$6$nasvisor-test$c2VjcmV0LWhhc2gtb2YtdGhlLWhvc3Q:19000:0:99999:7:::\n";

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (qemu-utils) is installed");
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    v.sort();
    v
}

/// A secret file of the host, 1 MiB (so that it can be a whole data file).
fn secret(dir: &Path) -> PathBuf {
    let p = dir.join("shadow");
    let mut b = SECRET.to_vec();
    b.resize(1 << 20, b'#');
    std::fs::write(&p, b).unwrap();
    p
}

/// Overwrites bytes of a file at `offset`.
fn patch(path: &Path, offset: u64, bytes: &[u8]) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

/// A qcow2 whose external data file is `target` (`data-file-raw`: guest
/// sector n is byte n of `target`).
fn qcow2_data_file(dir: &Path, target: &Path, raw: bool) -> PathBuf {
    let p = dir.join(format!("datafile-{raw}.qcow2"));
    let scratch = dir.join(format!("scratch-{raw}"));
    let opt = format!(
        "data_file={},data_file_raw={}",
        s(&scratch),
        if raw { "on" } else { "off" }
    );
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opt, s(&p), "1M"]);
    // Then point it at the secret (amend leaves the target untouched).
    qemu_img(&[
        "amend",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(target)),
        s(&p),
    ]);
    std::fs::remove_file(scratch).unwrap();
    p
}

/// A VMDK descriptor whose flat extent is `target`.
fn vmdk_flat_extent(dir: &Path, target: &Path) -> PathBuf {
    let p = dir.join("flat.vmdk");
    let d = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"monolithicFlat\"\n\nRW 2048 FLAT \"{}\" 0\n\nddb.adapterType = \"ide\"\n",
        s(target)
    );
    std::fs::write(&p, d).unwrap();
    p
}

/// A sparse VMDK (KDMV header) with capacity 0, whose embedded descriptor
/// then names a flat extent: qemu reads `target`.
fn vmdk_sparse_capacity_zero(dir: &Path, target: &Path) -> PathBuf {
    let p = dir.join("zero.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", s(&p), "1M"]);
    patch(&p, 12, &0u64.to_le_bytes());
    let head = std::fs::read(&p).unwrap();
    let desc_offset = u64::from_le_bytes(head[28..36].try_into().unwrap()) * 512;
    let desc_size = u64::from_le_bytes(head[36..44].try_into().unwrap()) as usize * 512;
    let mut d = format!(
        "# Disk DescriptorFile\nversion=1\nCID=12345678\nparentCID=ffffffff\n\
         createType=\"monolithicSparse\"\nRW 2048 FLAT \"{}\" 0\n",
        s(target)
    )
    .into_bytes();
    d.resize(desc_size, 0);
    patch(&p, desc_offset, &d);
    p
}

/// A qcow2 image whose L1 entries all point at one L2 table whose entries
/// all point at one data cluster: `qemu-img check` walks billions of
/// entries.
fn qcow2_check_bomb(dir: &Path) -> PathBuf {
    let p = dir.join("bomb.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&p), "60T"]);
    let head = std::fs::read(&p).unwrap();
    let l1_size = u32::from_be_bytes(head[36..40].try_into().unwrap()) as usize;
    let l1_offset = u64::from_be_bytes(head[40..48].try_into().unwrap());
    const CLUSTER: u64 = 65536;
    const COPIED: u64 = 1 << 63;
    let end = (head.len() as u64).div_ceil(CLUSTER) * CLUSTER;
    let (l2, data) = (end, end + CLUSTER);
    patch(
        &p,
        l2,
        &(data | COPIED).to_be_bytes().repeat((CLUSTER / 8) as usize),
    );
    patch(&p, data, &[0x42; CLUSTER as usize]);
    patch(&p, l1_offset, &(l2 | COPIED).to_be_bytes().repeat(l1_size));
    p
}

/// A minimal ISO 9660 image.
fn iso(dir: &Path) -> PathBuf {
    let p = dir.join("inst.iso");
    let mut b = vec![0u8; 64 * 2048];
    b[0x8000] = 1;
    b[0x8001..0x8006].copy_from_slice(b"CD001");
    std::fs::write(&p, b).unwrap();
    p
}

/// Every hostile image, with a fragment its refusal must contain.
fn hostile(dir: &Path, target: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let mut v = Vec::new();
    v.push((
        "qcow2 with a raw external data file",
        qcow2_data_file(dir, target, true),
        "external data file",
    ));
    v.push((
        "qcow2 with an external data file",
        qcow2_data_file(dir, target, false),
        "external data file",
    ));
    v.push((
        "vmdk descriptor with a flat extent elsewhere",
        vmdk_flat_extent(dir, target),
        "VMDK descriptor file",
    ));
    let split = dir.join("split.vmdk");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-o",
        "subformat=twoGbMaxExtentSparse",
        s(&split),
        "1M",
    ]);
    v.push(("vmdk twoGbMaxExtentSparse", split, "VMDK descriptor file"));
    v.push((
        "sparse vmdk of capacity 0 with extents in its descriptor",
        vmdk_sparse_capacity_zero(dir, target),
        "capacity 0",
    ));
    let parent = dir.join("parent.vmdk");
    let child = dir.join("child.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", s(&parent), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "vmdk",
        "-b",
        s(&parent),
        "-F",
        "vmdk",
        s(&child),
    ]);
    v.push(("vmdk with a parent", child, "parent"));
    let base = dir.join("base.qcow2");
    let over = dir.join("over.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&base), "1M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&base),
        "-F",
        "qcow2",
        s(&over),
    ]);
    v.push(("qcow2 with a backing file", over, "backing file"));
    let raw_backing = dir.join("raw-backing.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        s(target),
        "-F",
        "raw",
        s(&raw_backing),
        "1M",
    ]);
    v.push(("qcow2 backed by the secret", raw_backing, "backing file"));
    let json = dir.join("json-backing.qcow2");
    let spec = format!(r#"json:{{"driver":"file","filename":"{}"}}"#, s(target));
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        &spec,
        "-F",
        "raw",
        s(&json),
        "1M",
    ]);
    v.push(("qcow2 backed through json:", json, "backing file"));
    let nbd = dir.join("nbd-backing.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-u",
        "-b",
        "nbd://127.0.0.1:1/x",
        "-F",
        "raw",
        s(&nbd),
        "1M",
    ]);
    v.push(("qcow2 backed by an nbd: URL", nbd, "backing file"));
    let qed = dir.join("b.qed");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qed",
        "-u",
        "-b",
        s(target),
        "-F",
        "raw",
        s(&qed),
        "1M",
    ]);
    v.push(("qed with a backing file", qed, "format qed is not accepted"));
    for (fmt, file, why) in [
        ("vpc", "d.vhd", "format vpc (vhd) is not accepted"),
        ("vhdx", "d.vhdx", "format vhdx is not accepted"),
        ("qcow", "d.qcow", "format qcow (version 1) is not accepted"),
        ("parallels", "d.hdd", "format parallels is not accepted"),
    ] {
        let p = dir.join(file);
        qemu_img(&["create", "-q", "-f", fmt, s(&p), "1M"]);
        v.push((fmt, p, why));
    }
    let luks = dir.join("d.luks");
    qemu_img(&[
        "create",
        "-q",
        "--object",
        "secret,id=s0,data=pw",
        "-f",
        "luks",
        "-o",
        "key-secret=s0",
        s(&luks),
        "1M",
    ]);
    v.push(("luks", luks, "encrypted (LUKS)"));
    // An ISO whose first bytes are the qcow2 with the data file.
    let poly = iso(dir);
    let header = std::fs::read(qcow2_data_file(dir, target, true)).unwrap();
    patch(&poly, 0, &header[..4096]);
    let poly2 = dir.join("polyglot.iso");
    std::fs::rename(&poly, &poly2).unwrap();
    v.push((
        "ISO with a qcow2 header",
        poly2,
        "headers of several formats (qcow2, iso9660)",
    ));
    v
}

#[test]
fn images_that_reference_other_files_are_refused_with_their_reason_and_leave_nothing() {
    let src = tempfile::tempdir().unwrap();
    let host = tempfile::tempdir().unwrap();
    let target = secret(host.path());
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = Pool::open("p", pool_dir.path()).unwrap();
    let img = QemuImg::default();
    for (what, path, why) in hostile(src.path(), &target) {
        let e = inspect(&img, &path).unwrap_err();
        assert!(matches!(e, StorageError::BadImage { .. }), "{what}: {e:?}");
        assert!(e.to_string().contains(why), "{what}: {e}");

        let e = lib
            .add_file("evil", &path, ImageSpec::default(), |_, _| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains(why), "{what} (library): {e}");
        // An upload of the same bytes.
        let bytes = std::fs::read(&path).unwrap();
        let e = lib
            .add_reader(
                "evil",
                &bytes[..],
                Expected::default(),
                "upload",
                ImageSpec::default(),
                |_, _| {},
            )
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("upload: ") && e.contains(why),
            "{what} (upload): {e}"
        );
        let e = pool.import("evil", &path, |_| {}).unwrap_err().to_string();
        assert!(e.contains(why), "{what} (pool import): {e}");

        assert!(
            files(lib_dir.path()).is_empty(),
            "{what}: {:?}",
            files(lib_dir.path())
        );
        assert!(
            files(pool_dir.path()).is_empty(),
            "{what}: {:?}",
            files(pool_dir.path())
        );
    }
    assert!(lib.list().unwrap().is_empty());
    let mut want = SECRET.to_vec();
    want.resize(1 << 20, b'#');
    assert_eq!(
        std::fs::read(&target).unwrap(),
        want,
        "the secret is untouched"
    );
}

#[test]
fn single_file_images_of_the_allow_list_are_accepted_and_stored_as_fresh_qcow2() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let lib = ImageLibrary::open(lib_dir.path()).unwrap();
    let raw = src.path().join("disk.raw");
    let mut b = vec![0u8; 4 << 20];
    b[510] = 0x55;
    b[511] = 0xaa;
    std::fs::write(&raw, b).unwrap();
    for (fmt, opts, want) in [
        ("vmdk", "subformat=streamOptimized", SourceFormat::Vmdk),
        ("vmdk", "subformat=monolithicSparse", SourceFormat::Vmdk),
        ("vdi", "static=on", SourceFormat::Vdi),
        ("qcow2", "compat=0.10", SourceFormat::Qcow2),
    ] {
        let p = src
            .path()
            .join(format!("{fmt}-{}.img", opts.replace('=', "-")));
        qemu_img(&[
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            fmt,
            "-o",
            opts,
            s(&raw),
            s(&p),
        ]);
        let found = inspect(&QemuImg::default(), &p).unwrap();
        assert_eq!(found.format, want, "{p:?}");
        assert_eq!(found.virtual_size, 4 << 20);
        let name = format!("ok-{}", lib.list().unwrap().len());
        let img = lib
            .add_file(&name, &p, ImageSpec::default(), |_, _| {})
            .unwrap();
        assert_eq!(img.format, "qcow2");
        // The stored file was written by qemu-img convert: no foreign header.
        let v = QemuImg::default().info_json(&img.path, "qcow2").unwrap();
        assert!(v.get("backing-filename").is_none());
        assert!(v["format-specific"]["data"].get("data-file").is_none());
    }
}

#[test]
fn qemu_img_over_its_cpu_limit_is_stopped_and_the_image_refused() {
    let src = tempfile::tempdir().unwrap();
    let lib_dir = tempfile::tempdir().unwrap();
    let tight = QemuImg::default().with_limits(Limits {
        cpu_secs: 1,
        ..Limits::default()
    });
    let lib = ImageLibrary::open(lib_dir.path())
        .unwrap()
        .with_qemu_img(tight.clone());
    let bomb = qcow2_check_bomb(src.path());
    let e = lib
        .add_file("bomb", &bomb, ImageSpec::default(), |_, _| {})
        .unwrap_err();
    match &e {
        StorageError::Limit {
            op, limit, value, ..
        } => {
            assert_eq!(
                (*op, *limit, value.as_str()),
                ("check", "CPU time", "1 s"),
                "{e}"
            );
        }
        other => panic!("not a limit error: {other}"),
    }
    assert!(
        e.to_string().contains("exceeded its CPU time limit (1 s)"),
        "{e}"
    );
    assert!(
        files(lib_dir.path()).is_empty(),
        "{:?}",
        files(lib_dir.path())
    );
}

#[test]
fn qemu_img_over_its_memory_limit_is_a_clear_refusal() {
    let src = tempfile::tempdir().unwrap();
    // 64 MiB of address space runs qemu-img info on an ordinary image, not
    // on one whose header asks for a 32 MiB L1 table and its caches.
    let tight = QemuImg::default().with_limits(Limits {
        memory_bytes: 64 << 20,
        ..Limits::default()
    });
    let small = src.path().join("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&small), "64M"]);
    assert_eq!(inspect(&tight, &small).unwrap().format, SourceFormat::Qcow2);
    let huge = src.path().join("huge.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", s(&huge), "2000T"]);
    let e = inspect(&tight, &huge).unwrap_err();
    assert!(
        matches!(
            &e,
            StorageError::Limit {
                limit: "memory",
                ..
            }
        ),
        "not a memory limit error: {e}"
    );
    assert!(
        e.to_string().contains("exceeded its memory limit (64 MiB)"),
        "{e}"
    );
}

#[test]
fn a_source_swapped_for_another_file_during_its_import_leaves_nothing() {
    let src = tempfile::tempdir().unwrap();
    let pool_dir = tempfile::tempdir().unwrap();
    let pool = Pool::open("p", pool_dir.path()).unwrap();
    let good = src.path().join("disk.raw");
    std::fs::write(&good, vec![0u8; 4 << 20]).unwrap();
    // Once qemu-img is converting, the path is replaced (rename over it),
    // as the owner of the file could do after the inspection.
    let other = src.path().join("other.raw");
    std::fs::write(&other, vec![1u8; 4 << 20]).unwrap();
    let mut swapped = false;
    let e = pool
        .import("v", &good, |_| {
            if !swapped {
                std::fs::rename(&other, &good).unwrap();
                swapped = true;
            }
        })
        .unwrap_err()
        .to_string();
    assert!(swapped, "qemu-img reported progress");
    assert!(e.contains("changed while it was imported"), "{e}");
    assert!(
        files(pool_dir.path()).is_empty(),
        "{:?}",
        files(pool_dir.path())
    );
}
