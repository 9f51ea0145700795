use super::*;

fn spec() -> VmSpec {
    VmSpec::new("vm1", 256)
}

fn field_of(s: &VmSpec) -> String {
    s.validate().unwrap_err().field
}

#[test]
fn minimal_spec_is_valid() {
    spec().validate().unwrap();
}

#[test]
fn zero_vcpus_and_memory_are_refused_by_field() {
    let mut s = spec();
    s.vcpus = 0;
    assert_eq!(field_of(&s), "vcpus");
    let mut s = spec();
    s.memory_mib = 0;
    let e = s.validate().unwrap_err();
    assert_eq!(e.field, "memory_mib");
    assert!(e.to_string().contains("memory_mib"), "{e}");
}

#[test]
fn bad_names_are_refused() {
    for bad in [
        "",
        "a/b",
        "..",
        "a..b",
        "-x",
        ".x",
        "with space",
        "x,y",
        "é",
    ] {
        let e = validate_name(bad).unwrap_err();
        assert_eq!(e.field, "name", "{bad:?}");
    }
    assert!(validate_name(&"a".repeat(64)).is_err());
    for good in ["a", "web-01", "db_2.prod", "9"] {
        validate_name(good).unwrap();
    }
}

#[test]
fn disks_need_absolute_unique_paths() {
    let mut s = spec();
    s.disks.push(DiskSpec::qcow2("relative.qcow2"));
    assert_eq!(field_of(&s), "disks[0].path");

    let mut s = spec();
    s.disks.push(DiskSpec::qcow2("/vm/a.qcow2"));
    s.disks.push(DiskSpec::raw("/vm/./a.qcow2"));
    let e = s.validate().unwrap_err();
    assert_eq!(e.field, "disks[1].path");
    assert!(e.reason.contains("another disk"));

    let mut s = spec();
    s.disks.push(DiskSpec::qcow2("/vm/../etc/a.qcow2"));
    assert_eq!(field_of(&s), "disks[0].path");
}

#[test]
fn cdrom_on_virtio_is_refused() {
    let mut s = spec();
    let mut d = DiskSpec::cdrom("/iso/x.iso");
    d.bus = DiskBus::Virtio;
    s.disks.push(d);
    assert_eq!(field_of(&s), "disks[0].bus");
}

#[test]
fn readonly_ide_hard_disk_is_refused() {
    let mut s = spec();
    let mut d = DiskSpec::raw("/d/x.img");
    d.bus = DiskBus::Ide;
    d.readonly = true;
    s.disks.push(d);
    assert_eq!(field_of(&s), "disks[0].readonly");
}

#[test]
fn too_many_ide_disks_on_pc() {
    let mut s = spec();
    s.machine = MachineType::Pc;
    for i in 0..5 {
        let mut d = DiskSpec::raw(format!("/d/{i}.img"));
        d.bus = DiskBus::Ide;
        s.disks.push(d);
    }
    assert_eq!(field_of(&s), "disks[4].bus");
}

#[test]
fn nic_checks() {
    let mut s = spec();
    let mac: MacAddr = "52:54:00:00:00:01".parse().unwrap();
    s.nics.push(NicSpec {
        mac,
        backend: NicBackend::None,
        model: NicModel::default(),
    });
    s.nics.push(NicSpec {
        mac,
        backend: NicBackend::None,
        model: NicModel::default(),
    });
    assert_eq!(field_of(&s), "nics[1].mac");

    let mut s = spec();
    s.nics.push(NicSpec {
        mac: "01:00:5e:00:00:01".parse().unwrap(),
        backend: NicBackend::None,
        model: NicModel::default(),
    });
    assert_eq!(field_of(&s), "nics[0].mac");

    let mut s = spec();
    s.nics.push(NicSpec {
        mac: MacAddr::random(),
        backend: NicBackend::Tap {
            ifname: "tap/../x".into(),
        },
        model: NicModel::default(),
    });
    assert_eq!(field_of(&s), "nics[0].backend.ifname");
}

#[test]
fn mac_parse_and_display_round_trip() {
    let m: MacAddr = "52:54:00:AB:cd:0f".parse().unwrap();
    assert_eq!(m.to_string(), "52:54:00:ab:cd:0f");
    assert!("52:54:00:ab:cd".parse::<MacAddr>().is_err());
    assert!("52:54:00:ab:cd:zz".parse::<MacAddr>().is_err());
    assert!(MacAddr::random().is_valid_unicast());
}

#[test]
fn kernel_paths_must_be_absolute() {
    let mut s = spec();
    s.kernel = Some(KernelBoot {
        kernel: "/boot/vmlinuz".into(),
        initrd: Some("initrd.img".into()),
        append: None,
    });
    assert_eq!(field_of(&s), "kernel.initrd");
}

#[test]
fn spec_round_trips_through_json() {
    let mut s = spec();
    s.disks.push(DiskSpec::cdrom("/iso/a.iso"));
    s.nics.push(NicSpec {
        mac: MacAddr::random(),
        backend: NicBackend::Tap {
            ifname: "tap0".into(),
        },
        model: NicModel::E1000,
    });
    let json = serde_json::to_string(&s).unwrap();
    let back: VmSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
}
