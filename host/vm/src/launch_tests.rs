use super::*;
use crate::spec::{DiskSpec, KernelBoot, MacAddr, NicModel, NicSpec};

fn opts() -> LaunchOptions {
    LaunchOptions::new("/run/nasvisor/vms", Accel::Tcg)
}

fn joined(spec: &VmSpec) -> String {
    render_argv(spec, &opts()).unwrap().join(" ")
}

#[test]
fn minimal_vm_renders_the_fixed_flags() {
    let s = VmSpec::new("vm1", 128);
    let id = s.id();
    let a = render_argv(&s, &opts()).unwrap();
    let j = a.join(" ");
    for needle in [
        "-daemonize",
        &format!("-pidfile /run/nasvisor/vms/{id}.pid"),
        &format!("-qmp unix:/run/nasvisor/vms/{id}.qmp,server=on,wait=off"),
        &format!(
            "socket,id=serial0,path=/run/nasvisor/vms/{id}.serial,server=on,wait=off,\
             logfile=/run/nasvisor/vms/{id}.console.log,logappend=on"
        ),
        "-nodefaults",
        "-display none",
        "-nic none",
        "-device pvpanic",
        "-device pvpanic-pci",
        "-msg timestamp=on",
        "-accel tcg",
        "-machine q35,graphics=off",
        "-m 128M",
        "-smp 1",
        "-S",
        "-action shutdown=pause,panic=pause",
        &format!("-uuid {id}"),
        "-name guest=vm1,debug-threads=on",
    ] {
        assert!(j.contains(needle), "missing {needle:?} in {j}");
    }
}

#[test]
fn disks_nics_and_kernel_render() {
    let mut s = VmSpec::new("vm2", 256);
    s.disks.push(DiskSpec::qcow2("/pool/a,b.qcow2"));
    let mut scsi = DiskSpec::raw("/pool/b.img");
    scsi.bus = DiskBus::Scsi;
    s.disks.push(scsi);
    s.disks.push(DiskSpec::cdrom("/iso/c.iso"));
    s.nics.push(NicSpec {
        mac: "52:54:00:00:00:01".parse::<MacAddr>().unwrap(),
        backend: NicBackend::Tap {
            ifname: "nvtap0".into(),
        },
        model: NicModel::VirtioNetPci,
    });
    s.kernel = Some(KernelBoot {
        kernel: "/g/vmlinuz".into(),
        initrd: Some("/g/initrd.img".into()),
        append: Some("console=ttyS0 quiet".into()),
    });
    let a = render_argv(&s, &opts()).unwrap();
    let j = a.join(" ");
    // JSON syntax keeps commas in paths intact.
    assert!(j.contains(r#""filename":"/pool/a,b.qcow2""#), "{j}");
    assert!(j.contains(r#""driver":"virtio-scsi-pci""#));
    assert!(j.contains(r#""driver":"scsi-hd""#));
    assert!(j.contains(r#""bus":"scsi0.0""#));
    assert!(j.contains(r#""driver":"ide-cd""#));
    assert!(j.contains(r#""ifname":"nvtap0""#));
    assert!(j.contains(r#""mac":"52:54:00:00:00:01""#));
    assert!(!j.contains("-nic none"));
    assert!(!j.contains("bootindex"), "kernel boot sets no boot order");
    let i = a.iter().position(|x| x == "-append").unwrap();
    assert_eq!(a[i + 1], "console=ttyS0 quiet");
    // The CD-ROM is read-only at both layers.
    assert!(
        j.contains(r#""filename":"/iso/c.iso","node-name":"disk2-file","read-only":true"#)
            || j.contains(r#""read-only":true"#)
    );
}

#[test]
fn uefi_uses_given_ovmf_and_vars() {
    let mut s = VmSpec::new("vm3", 256);
    s.firmware = Firmware::Uefi;
    s.uefi_vars = Some("/var/lib/nasvisor/vm3.vars".into());
    let mut o = opts();
    o.ovmf = Some(OvmfPaths {
        code: "/fw/CODE.fd".into(),
        vars_template: "/fw/VARS.fd".into(),
    });
    let j = render_argv(&s, &o).unwrap().join(" ");
    assert!(j.contains("pflash0=pflash0,pflash1=pflash1"));
    assert!(j.contains(r#""filename":"/fw/CODE.fd""#));
    assert!(j.contains(r#""filename":"/var/lib/nasvisor/vm3.vars""#));
}

#[test]
fn invalid_spec_is_refused_before_rendering() {
    let mut s = VmSpec::new("vm4", 256);
    s.vcpus = 0;
    match render_argv(&s, &opts()) {
        Err(LaunchError::Spec(e)) => assert_eq!(e.field, "vcpus"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn run_dir_checks() {
    assert!(RunPaths::new("relative", "x").is_err());
    assert!(RunPaths::new("/a,b", "x").is_err());
    assert!(RunPaths::new("/run", "../x").is_err());
    assert!(RunPaths::new("/run", "a/b").is_err());
    let long = format!("/{}", "d".repeat(100));
    let e = RunPaths::new(long, "0123456789").unwrap_err();
    assert!(e.to_string().contains("Unix sockets"), "{e}");
    let p = RunPaths::new("/run/v", "abc").unwrap();
    assert_eq!(p.qmp_socket(), PathBuf::from("/run/v/abc.qmp"));
    assert_eq!(p.console_log(), PathBuf::from("/run/v/abc.console.log"));
}

#[test]
fn serial_file_and_none() {
    let mut s = VmSpec::new("vm5", 64);
    s.serial = SerialSpec::File {
        path: "/logs/a,b.log".into(),
    };
    assert!(joined(&s).contains("file,id=serial0,path=/logs/a,,b.log,append=on"));
    s.serial = SerialSpec::None;
    assert!(!joined(&s).contains("serial0"));
}

#[test]
fn uefi_variables_are_copied_private_from_a_readable_template() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let template = d.path().join("OVMF_VARS.fd");
    std::fs::write(&template, b"vars").unwrap();
    std::fs::set_permissions(&template, std::fs::Permissions::from_mode(0o644)).unwrap();
    let vars = d.path().join("vm.vars.fd");
    copy_private(&template, &vars).unwrap();
    assert_eq!(std::fs::read(&vars).unwrap(), b"vars");
    let mode = std::fs::metadata(&vars).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    assert!(copy_private(&template, &vars).is_err(), "never overwrites");
}

#[test]
fn a_replicated_disk_is_a_quorum_of_the_image_and_a_placeholder_of_its_size_that_stops_on_error() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("d.qcow2");
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(&img)
        .arg("48M")
        .output()
        .expect("qemu-img is installed");
    assert!(out.status.success(), "{out:?}");
    let mut s = VmSpec::new("ha", 128);
    s.disks.push(DiskSpec::qcow2("/pool/plain.qcow2"));
    s.disks.push(DiskSpec {
        replicated: true,
        ..DiskSpec::qcow2(&img)
    });
    let a = render_argv(&s, &opts()).unwrap();
    let blockdevs: Vec<serde_json::Value> = a
        .windows(2)
        .filter(|w| w[0] == "-blockdev")
        .map(|w| serde_json::from_str(&w[1]).unwrap())
        .collect();
    let node = |name: &str| {
        blockdevs
            .iter()
            .find(|b| b["node-name"] == name)
            .unwrap_or_else(|| panic!("no node {name} in {blockdevs:?}"))
    };
    // The plain disk is as before.
    assert_eq!(node("disk0")["driver"], "qcow2");
    // The replicated one: the image under `disk1-local`, a placeholder of
    // the image's virtual size, and the quorum the device uses.
    assert_eq!(node("disk1-local")["driver"], "qcow2");
    assert_eq!(node("disk1-local")["file"], "disk1-file");
    assert_eq!(node("disk1-alone")["driver"], "null-co");
    assert_eq!(node("disk1-alone")["size"], 48u64 << 20);
    let q = node("disk1");
    assert_eq!(q["driver"], "quorum");
    assert_eq!(q["vote-threshold"], 2);
    assert_eq!(q["read-pattern"], "fifo");
    assert_eq!(
        q["children"],
        serde_json::json!(["disk1-local", "disk1-alone"])
    );
    let devices: Vec<serde_json::Value> = a
        .windows(2)
        .filter(|w| w[0] == "-device" && w[1].starts_with('{'))
        .map(|w| serde_json::from_str(&w[1]).unwrap())
        .collect();
    let dev = |id: &str| devices.iter().find(|d| d["id"] == id).unwrap();
    assert_eq!(dev("disk1-dev")["drive"], "disk1");
    assert_eq!(dev("disk1-dev")["werror"], "stop");
    assert!(dev("disk0-dev").get("werror").is_none());

    // An image that is not qcow2 is refused, naming it.
    let bad = dir.path().join("bad.qcow2");
    std::fs::write(&bad, vec![0u8; 4096]).unwrap();
    s.disks[1].path = bad.clone();
    let e = render_argv(&s, &opts()).unwrap_err().to_string();
    assert!(
        e.contains("bad.qcow2") && e.contains("not a qcow2 image"),
        "{e}"
    );
}
