use super::spec::alias_for;
use super::*;

fn field_of(err: NetError) -> &'static str {
    match err {
        NetError::Invalid { field, .. } => field,
        other => panic!("not an Invalid error: {other}"),
    }
}

#[test]
fn specs_are_checked_field_by_field() {
    let s = VswitchSpec::parse("nv-lan0", Some("eth0"), Some(10)).unwrap();
    assert_eq!(s.port_name().as_deref(), Some("eth0.10"));
    assert_eq!(
        VswitchSpec::parse("nv-lan0", Some("eth0"), None)
            .unwrap()
            .port_name()
            .as_deref(),
        Some("eth0")
    );
    assert_eq!(
        VswitchSpec::parse("nv-lan0", None, None)
            .unwrap()
            .port_name(),
        None
    );
    assert_eq!(
        field_of(VswitchSpec::parse("lan0", None, None).unwrap_err()),
        "vswitch"
    );
    assert_eq!(
        field_of(VswitchSpec::parse("nv-a", Some("a/b"), None).unwrap_err()),
        "uplink"
    );
    assert_eq!(
        field_of(VswitchSpec::parse("nv-a", Some("nv-b"), None).unwrap_err()),
        "uplink"
    );
    assert_eq!(
        field_of(VswitchSpec::parse("nv-a", None, Some(5)).unwrap_err()),
        "vlan"
    );
    for bad in [0, 4095, 65535] {
        assert_eq!(
            field_of(VswitchSpec::parse("nv-a", Some("eth0"), Some(bad)).unwrap_err()),
            "vlan"
        );
    }
    VswitchSpec::parse("nv-a", Some("eth0"), Some(1)).unwrap();
    VswitchSpec::parse("nv-a", Some("eth0"), Some(4094)).unwrap();
    // "enp0s20f0u1.4094" would be 16 bytes.
    let err = VswitchSpec::parse("nv-a", Some("enp0s20f0u1"), Some(4094)).unwrap_err();
    assert!(err.to_string().contains("longer than 15"), "{err}");
}

#[test]
fn alias_round_trip() {
    assert_eq!(parse_alias(&alias_for(None, None)), Some((None, None)));
    assert_eq!(
        parse_alias(&alias_for(Some("eth0"), Some(7))),
        Some((Some("eth0".to_string()), Some(7)))
    );
    assert_eq!(parse_alias("somebody else's bridge"), None);
}

#[test]
fn bridge_mac_is_stable_local_unicast() {
    let a = bridge_mac("nv-lan0");
    assert_eq!(a, bridge_mac("nv-lan0"));
    assert_ne!(a, bridge_mac("nv-lan1"));
    assert!(a.is_unicast() && a.is_local());
}
