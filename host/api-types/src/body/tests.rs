//! Unit tests of the request bodies and their validation.

use crate::*;

fn image_body(json: &str) -> Result<ImageAdd, ApiError> {
    serde_json::from_str::<ImageAddBody>(json)
        .expect("parses")
        .into_add()
}

#[test]
fn the_debug_form_of_a_request_shows_no_password_hash_key_or_token() {
    let hash = "$6$saltsalt$c2VjcmV0LWhhc2g";
    let key =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl a@b";
    let create = Action::CreateVm(VmCreate {
        name: "vm1".into(),
        vcpus: 1,
        memory_mib: 256,
        description: None,
        disks: vec![],
        nics: vec![],
        image: Some("deb".into()),
        autostart: false,
        ha: false,
        firmware: FirmwareKind::Bios,
        install: Some(InstallSpec {
            users: vec![InstallUser {
                name: "admin".into(),
                ssh_authorized_keys: vec![key.into()],
                password_hash: Some(hash.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        host: None,
    });
    let join = ClusterJoin {
        address: "192.0.2.1:8444".into(),
        token: "nvjt1.secret-token".into(),
    };
    for text in [
        format!("{create:?}"),
        format!("{create:#?}"),
        format!("{join:?}"),
    ] {
        assert!(!text.contains("c2VjcmV0LWhhc2g"), "{text}");
        assert!(!text.contains("AAAAC3NzaC1lZDI1NTE5"), "{text}");
        assert!(!text.contains("secret-token"), "{text}");
    }
    let text = format!("{create:?}");
    assert!(
        text.contains("admin") && text.contains("<1 key(s) redacted>"),
        "{text}"
    );
}

#[test]
fn a_plain_http_image_url_needs_a_sha256_of_64_hex_digits() {
    let e = image_body(r#"{"name":"a","url":"http://192.0.2.1/a.qcow2"}"#).unwrap_err();
    assert_eq!(e.field.as_deref(), Some("sha256"));
    assert!(e.reason.contains("plain http://"), "{}", e.reason);
    let sha = "AB".repeat(32);
    let ok = image_body(&format!(
        r#"{{"name":"a","url":"HTTP://192.0.2.1/a.qcow2","sha256":"{sha}"}}"#
    ))
    .unwrap();
    assert_eq!(ok.sha256.as_deref(), Some("ab".repeat(32).as_str()));
    let ok = image_body(r#"{"name":"a","url":"https://192.0.2.1/a.qcow2"}"#).unwrap();
    assert_eq!(ok.sha256, None);
    for bad in ["abc", &"g".repeat(64), &"a".repeat(65)] {
        let e = image_body(&format!(
            r#"{{"name":"a","path":"/srv/a.img","sha256":"{bad}"}}"#
        ))
        .unwrap_err();
        assert_eq!(e.field.as_deref(), Some("sha256"), "{bad}");
    }
}

#[test]
fn names() {
    for ok in ["a", "vm-1", "A.b_c", "0", &"x".repeat(64)] {
        assert!(check_name("n", ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "../x",
        "a/b",
        ".a",
        "-a",
        "a b",
        "é",
        &"x".repeat(65),
        "a\0",
    ] {
        let e = check_name("n", bad).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("n"), "{bad}");
    }
}

#[test]
fn macs() {
    assert!(check_mac("m", "52:54:00:12:34:56").is_ok());
    for bad in [
        "",
        "52:54:00:12:34",
        "01:00:00:00:00:01",
        "00:00:00:00:00:00",
        "zz:54:00:12:34:56",
    ] {
        assert!(check_mac("m", bad).is_err(), "{bad}");
    }
}

#[test]
fn power_ops_parse() {
    let p: PowerOp = serde_json::from_str(r#"{"op":"start","host":"h1"}"#).unwrap();
    assert_eq!(
        p,
        PowerOp::Start {
            host: Some("h1".into())
        }
    );
    let p: PowerOp = serde_json::from_str(r#"{"op":"shutdown"}"#).unwrap();
    assert_eq!(p, PowerOp::Shutdown { timeout_s: 120 });
    let p: PowerOp = serde_json::from_str(r#"{"op":"force_off"}"#).unwrap();
    assert_eq!(p, PowerOp::ForceOff {});
    assert!(serde_json::from_str::<PowerOp>(r#"{"op":"force_off","x":1}"#).is_err());
    assert!(serde_json::from_str::<PowerOp>(r#"{"op":"start","hots":"h"}"#).is_err());
    assert!(serde_json::from_str::<PowerOp>(r#"{"op":"explode"}"#).is_err());
}

#[test]
fn vm_create_ranges() {
    let mut v = VmCreate {
        name: "vm".into(),
        vcpus: 1,
        memory_mib: 64,
        description: None,
        disks: vec![],
        nics: vec![],
        image: None,
        autostart: false,
        ha: false,
        firmware: FirmwareKind::Bios,
        install: None,
        host: None,
    };
    assert!(v.validate().is_ok());
    v.vcpus = 0;
    assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("vcpus"));
    v.vcpus = 257;
    assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("vcpus"));
    v.vcpus = 256;
    v.memory_mib = 63;
    assert_eq!(
        v.validate().unwrap_err().field.as_deref(),
        Some("memory_mib")
    );
    v.memory_mib = MAX_MEMORY_MIB + 1;
    assert_eq!(
        v.validate().unwrap_err().field.as_deref(),
        Some("memory_mib")
    );
    v.memory_mib = MAX_MEMORY_MIB;
    v.nics.push(NicSpec {
        vswitch: "sw".into(),
        mac: Some("bad".into()),
        model: None,
    });
    assert_eq!(
        v.validate().unwrap_err().field.as_deref(),
        Some("nics[0].mac")
    );
    v.nics.clear();
    v.disks.push(DiskSpec {
        pool: "p".into(),
        size_mib: None,
        volume: None,
    });
    assert_eq!(v.validate().unwrap_err().field.as_deref(), Some("disks[0]"));
}

#[test]
fn install_syntax() {
    for ok in ["a", "web-1", "Web1.Example.org", "x.y.z", "0a"] {
        assert!(check_hostname("h", ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "-a",
        "a-",
        "a..b",
        ".a",
        "a.",
        "a_b",
        "é",
        &"a".repeat(64),
    ] {
        assert!(check_hostname("h", bad).is_err(), "{bad}");
    }
    for ok in ["root", "_svc", "a-b_c9", &"a".repeat(32)] {
        assert!(check_user_name("u", ok).is_ok(), "{ok}");
    }
    for bad in ["", "Root", "9a", "-a", "a.b", &"a".repeat(33)] {
        assert!(check_user_name("u", bad).is_err(), "{bad}");
    }
    for ok in ["192.0.2.1/24", "10.0.0.1/0", "2001:db8::1/64", "::1/128"] {
        assert!(check_cidr("a", ok).is_ok(), "{ok}");
    }
    for bad in [
        "192.0.2.1",
        "192.0.2.1/",
        "192.0.2.1/33",
        "192.0.2/24",
        "::1/129",
        "192.0.2.1/+8",
        "x/8",
    ] {
        assert!(check_cidr("a", bad).is_err(), "{bad}");
    }
    for ok in ["nginx", "libstdc++6", "python3.11", "0ad"] {
        assert!(check_package("p", ok).is_ok(), "{ok}");
    }
    for bad in ["a", "Nginx", "-x", "a_b", "a b"] {
        assert!(check_package("p", bad).is_err(), "{bad}");
    }
    assert!(check_timezone("t", "America/Argentina/Buenos_Aires").is_ok());
    assert!(check_timezone("t", "Etc/GMT+5").is_ok());
    for bad in ["", "/etc", "a//b", "Europe/Berlin ", "a;b"] {
        assert!(check_timezone("t", bad).is_err(), "{bad}");
    }
    assert!(check_ready_marker("r", "NASVISOR-READY").is_ok());
    assert!(check_ready_marker("r", "").is_err());
    assert!(check_ready_marker("r", "a\tb").is_err());
    assert!(check_ready_marker("r", &"x".repeat(129)).is_err());
}
