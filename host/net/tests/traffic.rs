//! Traffic through a vswitch without QEMU: two "guest" namespaces, each
//! linked to the bridge's namespace by a veth pair, exchange packets over
//! TEST-NET-1 addresses (192.0.2.0/24) that exist only inside the
//! namespaces this test creates.

mod common;

use std::time::Duration;

use common::{have_ping, udp_round_trip, TestNs};
use nasvisor_net::{BridgeName, NetError, Vswitch, VswitchSpec};

/// Links guest namespace `guest` to `switch` with a veth pair: `port` in
/// the switch namespace, `eth0` with `addr` in the guest.
fn plug(switch: &TestNs, port: &str, guest: &TestNs, addr: &str) {
    switch.ip(&[
        "link",
        "add",
        port,
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        guest.name(),
    ]);
    guest.ip(&["addr", "add", addr, "dev", "eth0"]);
    guest.ip(&["link", "set", "eth0", "up"]);
}

fn ping(from: &TestNs, to: &str) -> bool {
    (0..3).any(|_| from.exec(&["ping", "-c1", "-W1", to]).status.success())
}

#[test]
fn two_namespaces_talk_through_the_bridge() {
    let sw = TestNs::new("sw");
    let g1 = TestNs::new("g1");
    let g2 = TestNs::new("g2");
    let net = sw.net();
    plug(&sw, "p1", &g1, "192.0.2.1/24");
    plug(&sw, "p2", &g2, "192.0.2.2/24");

    // p1 is the vswitch's uplink; p2 a plain port.
    let spec = VswitchSpec::parse("nv-sw", Some("p1"), None).unwrap();
    Vswitch::ensure(&net, &spec).unwrap();
    let name = BridgeName::new("nv-sw").unwrap();
    Vswitch::attach_port(&net, &name, "p2").unwrap();

    let s1 = g1.udp("192.0.2.1:0");
    let s2 = g2.udp("192.0.2.2:7000");
    let ok = (0..5).any(|_| udp_round_trip(&s1, &s2, "192.0.2.2:7000", Duration::from_millis(500)));
    assert!(ok, "UDP round trip g1 -> g2 through nv-sw failed");

    if have_ping() {
        assert!(ping(&g1, "192.0.2.2"), "ping g1 -> g2 failed");
        assert!(ping(&g2, "192.0.2.1"), "ping g2 -> g1 failed");
    } else {
        eprintln!("note: no ping binary (iputils-ping); checked with UDP only");
    }

    // Unplug p2: the traffic must stop, so it really went through the bridge.
    assert!(Vswitch::detach_port(&net, &name, "p2").unwrap());
    assert!(
        !udp_round_trip(&s1, &s2, "192.0.2.2:7000", Duration::from_millis(300)),
        "traffic still flows without the bridge"
    );
}

#[test]
fn tagged_traffic_through_a_vlan_vswitch() {
    let sw = TestNs::new("vsw");
    let g1 = TestNs::new("vg1");
    let g2 = TestNs::new("vg2");
    let net = sw.net();
    // g1 stands for the LAN behind the uplink and speaks VLAN 42 on it; g2
    // is an untagged port of the vswitch, as a VM's tap would be.
    sw.ip(&[
        "link",
        "add",
        "up0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        g1.name(),
    ]);
    sw.ip(&["link", "set", "up0", "up"]);
    g1.ip(&["link", "set", "eth0", "up"]);
    plug(&sw, "p2", &g2, "192.0.2.2/24");

    let spec = VswitchSpec::parse("nv-v42", Some("up0"), Some(42)).unwrap();
    match Vswitch::ensure(&net, &spec) {
        Err(NetError::Unsupported { .. }) => {
            eprintln!("note: kernel without CONFIG_VLAN_8021Q; tagged traffic not testable here");
            return;
        }
        Err(other) => panic!("unexpected error: {other}"),
        Ok(_) => {}
    }
    g1.ip(&[
        "link", "add", "link", "eth0", "name", "eth0.42", "type", "vlan", "id", "42",
    ]);
    g1.ip(&["addr", "add", "192.0.2.1/24", "dev", "eth0.42"]);
    g1.ip(&["link", "set", "eth0.42", "up"]);
    Vswitch::attach_port(&net, spec.name(), "p2").unwrap();

    let s1 = g1.udp("192.0.2.1:0");
    let s2 = g2.udp("192.0.2.2:7000");
    let ok = (0..5).any(|_| udp_round_trip(&s1, &s2, "192.0.2.2:7000", Duration::from_millis(500)));
    assert!(ok, "tagged UDP round trip through nv-v42 failed");
    if have_ping() {
        assert!(ping(&g1, "192.0.2.2"), "ping over VLAN 42 failed");
    }
}

#[test]
fn commands_can_be_started_inside_the_namespace() {
    // The way QEMU will be started next to its taps.
    let ns = TestNs::new("cmd");
    let net = ns.net();
    Vswitch::ensure(&net, &VswitchSpec::parse("nv-cmd", None, None).unwrap()).unwrap();
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["-j", "link", "show", "dev", "nv-cmd"]);
    net.enter_on_spawn(&mut cmd).unwrap();
    drop(net); // the command holds its own reference to the namespace
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "nv-cmd not visible from the child: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
