//! Taps on real tun/tap devices, each test inside its own namespace.

mod common;

use std::collections::HashSet;
use std::fs::OpenOptions;
use std::os::fd::AsRawFd;

use common::{host_has_link, TestNs};
use nasvisor_net::netns::Netns;
use nasvisor_net::{mac, BridgeName, NetError, Tap, TapName, TapOptions, Vswitch, VswitchSpec};

fn bridge(ns: &TestNs, name: &str) -> BridgeName {
    let name = BridgeName::new(name).unwrap();
    Vswitch::ensure(&ns.net(), &VswitchSpec::new(name.clone())).unwrap();
    name
}

#[test]
fn tap_create_attach_and_delete() {
    let ns = TestNs::new("tap");
    let net = ns.net();
    let br = bridge(&ns, "nv-vms");
    let name = TapName::for_vm("3f2c9a50-0d7e-4a56-bb0e-2f1b6a0c9d11", 0).unwrap();

    let tap = Tap::create(&net, &name, &br).unwrap();
    assert_eq!(tap.bridge.as_deref(), Some("nv-vms"));
    assert!(tap.up);
    // No process has the tap open yet. (A process another test thread forks
    // at the moment of creation holds the creating descriptor until its
    // exec closes it, so the carrier may show for that instant.)
    if tap.carrier {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while ns.link(name.as_str()).is_some_and(|l| {
            l["flags"]
                .as_array()
                .is_some_and(|f| f.iter().any(|x| x == "LOWER_UP"))
        }) {
            assert!(
                std::time::Instant::now() < deadline,
                "the new tap keeps its carrier: a process has it open"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
    // As it is now (the carrier seen at creation may have been that
    // instant's): what `ensure` and `get` are compared with below.
    let tap = Tap::get(&net, &name).unwrap().expect("the tap");
    assert!(!tap.carrier, "no process has the tap open: {tap:?}");
    let link = ns.link(name.as_str()).expect("tap exists in the namespace");
    assert_eq!(link["linkinfo"]["info_kind"], "tun");
    assert_eq!(link["linkinfo"]["info_data"]["type"], "tap");
    assert_eq!(link["linkinfo"]["info_data"]["persist"], true);
    assert_eq!(link["linkinfo"]["info_data"]["pi"], false);
    assert_eq!(link["master"], "nv-vms");
    assert!(
        !host_has_link(name.as_str()),
        "the tap leaked into the host namespace"
    );

    // Create refuses a second time; ensure accepts it and changes nothing.
    let err = Tap::create(&net, &name, &br).unwrap_err();
    assert!(matches!(err, NetError::Exists { what: "tap", .. }), "{err}");
    let again = Tap::ensure(&net, &name, &br, &TapOptions::default()).unwrap();
    assert_eq!(again, tap);
    assert_eq!(Tap::get(&net, &name).unwrap(), Some(tap.clone()));

    // The vswitch sees it, and will not go away under it.
    let vs = Vswitch::get(&net, &br).unwrap().unwrap();
    assert_eq!(vs.taps, vec![name.to_string()]);
    let err = Vswitch::delete(&net, &br, false).unwrap_err();
    assert!(matches!(err, NetError::Busy { .. }), "{err}");
    assert!(err.to_string().contains(name.as_str()), "{err}");
    assert!(ns.link("nv-vms").is_some());

    assert!(Tap::delete(&net, &name).unwrap());
    assert!(ns.link(name.as_str()).is_none());
    assert!(
        !Tap::delete(&net, &name).unwrap(),
        "second delete is a no-op"
    );
    assert_eq!(Tap::get(&net, &name).unwrap(), None);
    assert!(Vswitch::delete(&net, &br, false).unwrap());
}

#[test]
fn forced_vswitch_delete_leaves_taps_detached() {
    let ns = TestNs::new("force");
    let net = ns.net();
    let br = bridge(&ns, "nv-f");
    let a = TapName::for_vm("vm-a", 0).unwrap();
    let b = TapName::for_vm("vm-a", 1).unwrap();
    Tap::create(&net, &a, &br).unwrap();
    Tap::create(&net, &b, &br).unwrap();
    let mut expected = vec![a.to_string(), b.to_string()];
    expected.sort();
    assert_eq!(Vswitch::get(&net, &br).unwrap().unwrap().taps, expected);

    assert!(Vswitch::delete(&net, &br, true).unwrap());
    assert!(ns.link("nv-f").is_none());
    let tap = Tap::get(&net, &a)
        .unwrap()
        .expect("taps survive a forced delete");
    assert_eq!(tap.bridge, None);

    // Re-creating the vswitch and ensuring the tap re-attaches it.
    let br = bridge(&ns, "nv-f");
    let tap = Tap::ensure(&net, &a, &br, &TapOptions::default()).unwrap();
    assert_eq!(tap.bridge.as_deref(), Some("nv-f"));
}

#[test]
fn tap_options_owner_and_host_side_address() {
    let ns = TestNs::new("opts");
    let net = ns.net();
    let br = bridge(&ns, "nv-o");
    let guest_mac = mac::generate("cluster-t", "vm-o", 0, &HashSet::new()).unwrap();
    let name = TapName::for_vm("vm-o", 0).unwrap();
    let options = TapOptions {
        owner: Some(4242),
        group: Some(4343),
        mac: Some(guest_mac.host_side()),
        multi_queue: false,
    };
    let tap = Tap::create_with(&net, &name, &br, &options).unwrap();
    assert_eq!(tap.mac, Some(guest_mac.host_side()));
    let link = ns.link(name.as_str()).unwrap();
    assert_eq!(link["address"], guest_mac.host_side().to_string());
    // `ip` prints the id as a number when no account has it.
    let id = |key: &str| {
        link["linkinfo"]["info_data"][key]
            .to_string()
            .replace('"', "")
    };
    assert_eq!(id("user"), "4242");
    assert_eq!(id("group"), "4343");
}

#[test]
fn a_process_can_open_the_tap_the_way_qemu_does() {
    let ns = TestNs::new("open");
    let net = ns.net();
    let br = bridge(&ns, "nv-q");
    let name = TapName::for_vm("vm-q", 0).unwrap();
    Tap::create(&net, &name, &br).unwrap();

    // What QEMU's tap_open does: TUNSETIFF on the existing name, with
    // IFF_TAP | IFF_NO_PI | IFF_VNET_HDR.
    let tap_name = name.to_string();
    let file = Netns::open(ns.name())
        .unwrap()
        .run(move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .unwrap();
            // SAFETY: all-zero bytes are a valid `ifreq`.
            let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in req.ifr_name.iter_mut().zip(tap_name.bytes()) {
                *d = s as libc::c_char;
            }
            req.ifr_ifru.ifru_flags =
                (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as libc::c_short;
            // SAFETY: the descriptor is open and `req` is a valid ifreq that
            // outlives the call.
            let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
            assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
            file
        })
        .unwrap();
    let tap = Tap::get(&net, &name).unwrap().unwrap();
    assert!(tap.carrier, "an open tap has carrier");
    assert_eq!(tap.bridge.as_deref(), Some("nv-q"));

    drop(file);
    let tap = Tap::get(&net, &name)
        .unwrap()
        .expect("the tap persists after close");
    assert!(!tap.carrier);
}

#[test]
fn tap_errors_name_the_object_and_leave_nothing() {
    let ns = TestNs::new("taperr");
    let net = ns.net();
    let name = TapName::for_vm("vm-e", 0).unwrap();

    // No such vswitch: nothing is created.
    let err = Tap::create(&net, &name, &BridgeName::new("nv-none").unwrap()).unwrap_err();
    assert!(
        matches!(
            err,
            NetError::NotFound {
                what: "vswitch",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("nv-none"), "{err}");
    assert!(ns.link(name.as_str()).is_none());

    // A non-tap link with a tap's name is not touched.
    let br = bridge(&ns, "nv-e");
    ns.ip(&[
        "link",
        "add",
        name.as_str(),
        "type",
        "veth",
        "peer",
        "name",
        "e-peer",
    ]);
    let err = Tap::get(&net, &name).unwrap_err();
    assert!(
        matches!(err, NetError::Conflict { what: "tap", .. }),
        "{err}"
    );
    let err = Tap::delete(&net, &name).unwrap_err();
    assert!(matches!(err, NetError::Conflict { .. }), "{err}");
    let err = Tap::ensure(&net, &name, &br, &TapOptions::default()).unwrap_err();
    assert!(matches!(err, NetError::Conflict { .. }), "{err}");
    assert!(ns.link(name.as_str()).is_some());
    assert_eq!(ns.master_of(name.as_str()), None);
}
