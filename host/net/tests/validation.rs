//! Bad input is refused with the field named, and changes nothing; MAC
//! addresses are stable and unique.

mod common;

use std::collections::HashSet;

use common::TestNs;
use nasvisor_net::{mac, MacAddr, Net, NetError, TapName, VswitchSpec};

fn field_of(err: NetError) -> &'static str {
    match err {
        NetError::Invalid { field, .. } => field,
        other => panic!("not an Invalid error: {other}"),
    }
}

#[test]
fn bad_names_are_refused_with_the_field_named() {
    let cases: Vec<(&str, Result<VswitchSpec, NetError>)> = vec![
        ("vswitch", VswitchSpec::parse("", None, None)),
        ("vswitch", VswitchSpec::parse("br0", None, None)),
        ("vswitch", VswitchSpec::parse("nv-UPPER", None, None)),
        (
            "vswitch",
            VswitchSpec::parse("nv-waytoolongname", None, None),
        ),
        ("vswitch", VswitchSpec::parse("nv-a/b", None, None)),
        ("uplink", VswitchSpec::parse("nv-a", Some(""), None)),
        ("uplink", VswitchSpec::parse("nv-a", Some("eth 0"), None)),
        (
            "uplink",
            VswitchSpec::parse("nv-a", Some("sixteen-chars-xx"), None),
        ),
        ("vlan", VswitchSpec::parse("nv-a", Some("eth0"), Some(0))),
        ("vlan", VswitchSpec::parse("nv-a", Some("eth0"), Some(4095))),
        ("vlan", VswitchSpec::parse("nv-a", None, Some(10))),
    ];
    for (field, result) in cases {
        let err = result.expect_err(field);
        let text = err.to_string();
        assert_eq!(field_of(err), field, "{text}");
        assert!(text.starts_with(&format!("{field}: ")), "{text}");
    }
    assert_eq!(field_of(TapName::for_vm("", 0).unwrap_err()), "vm_id");
    assert_eq!(
        field_of(TapName::for_vm("vm", 100).unwrap_err()),
        "nic_index"
    );
    assert_eq!(field_of(TapName::new("eth0").unwrap_err()), "tap");
    assert_eq!(
        field_of(MacAddr::parse_nic("mac", "ff:ff:ff:ff:ff:ff").unwrap_err()),
        "mac"
    );
    assert_eq!(field_of(Net::netns("../../etc").unwrap_err()), "netns");
    let err = Net::netns("nvtest-does-not-exist").unwrap_err();
    assert!(matches!(err, NetError::Netns { .. }), "{err}");
    assert!(err.to_string().contains("nvtest-does-not-exist"), "{err}");
}

#[test]
fn refused_requests_change_nothing() {
    let ns = TestNs::new("val");
    let net = ns.net();
    let before = ns.link_names();
    for (name, uplink, vlan) in [
        ("nv-a", Some("missing0"), None),
        ("nv-b", Some("lo"), None),
        ("nv-c", Some("missing0"), Some(5)),
    ] {
        let spec = VswitchSpec::parse(name, uplink, vlan).unwrap();
        nasvisor_net::Vswitch::ensure(&net, &spec).unwrap_err();
    }
    assert_eq!(ns.link_names(), before);
}

#[test]
fn macs_are_stable_and_unique() {
    let mut used = HashSet::new();
    let mut first_pass = Vec::new();
    for vm in [
        "vm-a",
        "vm-b",
        "vm-c",
        "0b6f1c1e-4a7e-4f57-9b1c-7d1a8f3e2c10",
    ] {
        for nic in 0..4 {
            let m = mac::generate("cluster-1", vm, nic, &used).unwrap();
            assert!(m.is_unicast() && m.is_local() && !m.is_zero(), "{m}");
            assert_eq!(&m.octets()[..3], &mac::QEMU_PREFIX);
            assert!(used.insert(m), "duplicate {m}");
            first_pass.push(m);
        }
    }
    // Same inputs, same answers (as on another host or after an upgrade).
    let mut again = HashSet::new();
    let mut second_pass = Vec::new();
    for vm in [
        "vm-a",
        "vm-b",
        "vm-c",
        "0b6f1c1e-4a7e-4f57-9b1c-7d1a8f3e2c10",
    ] {
        for nic in 0..4 {
            let m = mac::generate("cluster-1", vm, nic, &again).unwrap();
            again.insert(m);
            second_pass.push(m);
        }
    }
    assert_eq!(first_pass, second_pass);
    // Another cluster gets other addresses.
    let other = mac::generate("cluster-2", "vm-a", 0, &HashSet::new()).unwrap();
    assert_ne!(other, first_pass[0]);
    // An address already taken (say by a user-given MAC) is skipped.
    let taken: HashSet<MacAddr> = [first_pass[0]].into();
    let next = mac::generate("cluster-1", "vm-a", 0, &taken).unwrap();
    assert_ne!(next, first_pass[0]);
    assert_eq!(next, mac::generate("cluster-1", "vm-a", 0, &taken).unwrap());
}
