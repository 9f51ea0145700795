//! The generated seed must be accepted by real cloud-init.
//!
//! - `user-data` must pass `cloud-init schema --config-file` ("Valid
//!   cloud-config", no deprecation).
//! - `network-config` is checked with `cloud-init schema --schema-type
//!   network-config` when the installed cloud-init has it; otherwise (e.g.
//!   Debian 12's 22.4) it is run through cloud-init's own network-config
//!   parser and renderers (`cloud-init devel net-convert`), which fail on
//!   anything they do not understand.
//! - Both files are loaded with the YAML library cloud-init itself uses
//!   (PyYAML, under cloud-init's own interpreter) and compared with what was
//!   asked, so hostile strings are proven to stay inside their values.
//!
//! These tests fail, never skip, when `cloud-init` is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use nasvisor_os_installer::DefaultOsInstaller;
use nasvisor_plugin_sdk::prelude::*;
use serde_json::{json, Value};

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSU5lmFlS0xANPNh166AdH9idJfUdZ2E1MQR/Z1pkAZ alice@laptop";
const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDUYOk+yO+LXUFHULkCOKqm1OoIJ/Z0wJ+Osd2SVgos/dYjHJplSGXWH0r5nV5Rr/hFGOUrIU5LPpVf1yUzjQysJTa58y2D7361Y1VUkWUxd7jPnIgwLYn7jCIvHYU9vBK3HuVqgF8WLXwuFe7yf9d6C2w1JOXIpeJItb/FBzdSXyXHAjA3/u2ZfFhaVf4Epqyk4dcisXJqorRT2hpjn3rOfySn3CnodXS7il/9LbtE3EVWvrrg+AZ1OIm1I4Pe7hkRP9KCgzMj5yt9GVNbSkFQjxVlvb/FCHu9U2i1Xq38VSIt9YhGdfEO+lgkZKZcfRO/ucaUHuXwsY+66Ts9iA5p bob";
const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBAcSwpXG49iOyxqPLXrJKAhEUvzw4b3qlD7dwc1duEE68KoHt8P5D8HQ8zchCpkAT1pqqNZ/kCJRInv99ZvGbvyoB/skkJIVSYK4ujTtY1iByaLIKp3bayymVaBrRJD5/Q== x";
const SHA512_HASH: &str = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";
const YESCRYPT_HASH: &str =
    "$y$j9T$H5K6eASF8fxtUWFdrwlSo0$GzAaoMJdzJoksPW/OQkxulEdtea5SbpprMnANdULPR.";
const BCRYPT_HASH: &str = "$2b$12$4g72IA9AnL7FOSir1SOS4OWmFo5DV08wY7rASofty1H02wAVlVnlC";

/// Hostile text that is still a legal SSH key comment / ready marker.
const HOSTILE: &str = "x\" \\ : # {a: b} [c] &d *e !f |g >h '%@` - --- ... \\n \\u2028";
const HOSTILE_UNICODE: &str = "é 日本 😀 \u{a0}\u{feff}";

/// The `cloud-init` executable on PATH.
fn cloud_init() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("cloud-init"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!("the `cloud-init` binary is not on PATH; it validates the generated seed. Run scripts/setup.sh to install it")
        })
}

/// The interpreter cloud-init runs on (it necessarily has PyYAML).
fn cloud_init_python() -> Vec<String> {
    let text = std::fs::read_to_string(cloud_init()).expect("read the cloud-init script");
    let first = text.lines().next().unwrap_or("");
    let cmd: Vec<String> = first
        .strip_prefix("#!")
        .unwrap_or_else(|| panic!("cloud-init is not a script with a #! line: {first:?}"))
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert!(!cmd.is_empty(), "empty #! line in cloud-init");
    cmd
}

/// A fresh scratch directory.
fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = std::env::temp_dir().join(format!(
        "nasvisor-cloud-init-{}-{}-{name}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create scratch dir");
    d
}

fn run(cmd: &mut Command) -> (bool, String) {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Load a YAML file with cloud-init's PyYAML and return it as JSON.
fn load_yaml(file: &Path) -> Value {
    let py = cloud_init_python();
    let (ok, out) = run(Command::new(&py[0]).args(&py[1..]).args([
        "-c",
        "import json, sys, yaml\nwith open(sys.argv[1], encoding='utf-8') as f:\n    print(json.dumps(yaml.safe_load(f)))",
        file.to_str().unwrap(),
    ]));
    assert!(ok, "PyYAML could not load {}: {out}", file.display());
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn disk_image() -> ImageMeta {
    ImageMeta {
        id: "debian-12".into(),
        name: "Debian 12".into(),
        format: ImageFormat::Qcow2,
        os_family: "linux".into(),
        os_variant: "debian-12".into(),
        cloud_init: true,
        firmware: Firmware::Uefi,
        virtual_size_bytes: 2 << 30,
        ready_marker: None,
    }
}

fn user(
    name: &str,
    hash: Option<&str>,
    keys: &[&str],
    sudo: bool,
    groups: &[&str],
    shell: Option<&str>,
) -> UserSpec {
    UserSpec {
        name: name.into(),
        password_hash: hash.map(Into::into),
        ssh_authorized_keys: keys.iter().map(|k| k.to_string()).collect(),
        sudo,
        groups: groups.iter().map(|g| g.to_string()).collect(),
        shell: shell.map(Into::into),
    }
}

fn nic(mac: &str, dhcp4: bool, addresses: &[&str], gw: Option<&str>, dns: &[&str]) -> NicSettings {
    NicSettings {
        mac: mac.into(),
        dhcp4,
        addresses: addresses.iter().map(|a| a.to_string()).collect(),
        gateway4: gw.map(Into::into),
        nameservers: dns.iter().map(|a| a.to_string()).collect(),
    }
}

/// The requests checked against cloud-init, with the image marker to use.
fn cases() -> Vec<(&'static str, InstallRequest, Option<String>)> {
    let base = InstallRequest {
        vm_name: "vm1".into(),
        hostname: "web01".into(),
        ..Default::default()
    };
    vec![
        ("minimal", base.clone(), None),
        (
            "full",
            InstallRequest {
                hostname: "web01.example.com".into(),
                users: vec![
                    user(
                        "alice",
                        Some(SHA512_HASH),
                        &[ED25519, ECDSA384],
                        true,
                        &["adm", "sudo"],
                        Some("/bin/bash"),
                    ),
                    user("bob", None, &[RSA], false, &[], None),
                    user(
                        "_svc",
                        Some(YESCRYPT_HASH),
                        &[],
                        false,
                        &["users"],
                        Some("/usr/sbin/nologin"),
                    ),
                ],
                packages: vec![
                    "nginx".into(),
                    "qemu-guest-agent".into(),
                    "libstdc++6".into(),
                ],
                nics: vec![
                    nic(
                        "52:54:00:12:34:56",
                        false,
                        &["192.0.2.10/24", "2001:db8::10/64"],
                        Some("192.0.2.1"),
                        &["192.0.2.53", "2001:db8::53"],
                    ),
                    nic("52:54:00:AB:CD:EF", true, &[], None, &[]),
                ],
                disk_size_gib: 20,
                timezone: Some("America/Argentina/Buenos_Aires".into()),
                ..base.clone()
            },
            None,
        ),
        (
            "password-only",
            InstallRequest {
                users: vec![user("carol", Some(BCRYPT_HASH), &[], true, &[], None)],
                timezone: Some("Etc/GMT+5".into()),
                nics: vec![nic(
                    "02:00:00:00:00:01",
                    false,
                    &["2001:db8:1::5/64"],
                    None,
                    &["2001:db8:1::1"],
                )],
                ..base.clone()
            },
            None,
        ),
        (
            "hostile",
            InstallRequest {
                vm_name: "vm\n#cloud-config\nruncmd: [reboot]".into(),
                users: vec![user(
                    "mallory",
                    None,
                    &[
                        &format!("{ED25519} {HOSTILE}"),
                        &format!("{RSA} {HOSTILE_UNICODE}"),
                    ],
                    false,
                    &[],
                    None,
                )],
                nics: vec![nic(
                    "52:54:00:00:00:02",
                    true,
                    &["10.1.2.3/8"],
                    Some("10.0.0.1"),
                    &["10.0.0.53"],
                )],
                ..base.clone()
            },
            Some(format!("READY {HOSTILE}")),
        ),
        ("dollar-marker", base, Some("ready $UPTIME ${x} $".into())),
    ]
}

fn plan(req: &InstallRequest, marker: &Option<String>) -> InstallPlan {
    let image = ImageMeta {
        ready_marker: marker.clone(),
        ..disk_image()
    };
    DefaultOsInstaller
        .plan_install(&StaticEnv::default(), &image, req)
        .unwrap_or_else(|e| panic!("plan failed: {e}"))
}

fn seed_file<'p>(p: &'p InstallPlan, name: &str) -> Option<&'p str> {
    p.seed
        .iter()
        .find(|f| f.name == name)
        .map(|f| f.contents.as_str())
}

#[test]
fn cloud_init_is_installed() {
    let (ok, out) = run(Command::new(cloud_init()).arg("--version"));
    assert!(ok, "cloud-init --version failed: {out}");
}

#[test]
fn the_validator_rejects_a_bad_cloud_config() {
    // Guard against a validator that accepts everything.
    let d = scratch("bad");
    let f = d.join("user-data");
    std::fs::write(&f, "#cloud-config\nusers:\n  - name: 5\n    sudo: [1]\n").unwrap();
    let (ok, out) = run(Command::new(cloud_init())
        .args(["schema", "--config-file"])
        .arg(&f));
    assert!(!ok, "cloud-init accepted an invalid config: {out}");
    let _ = std::fs::remove_dir_all(d);
}

#[test]
fn user_data_passes_cloud_init_schema() {
    for (name, req, marker) in cases() {
        let p = plan(&req, &marker);
        let ud = seed_file(&p, "user-data").expect("user-data");
        assert!(ud.starts_with("#cloud-config\n"), "{name}");
        let d = scratch(name);
        let f = d.join("user-data");
        std::fs::write(&f, ud).unwrap();
        let (ok, out) = run(Command::new(cloud_init())
            .args(["schema", "--config-file"])
            .arg(&f));
        assert!(
            ok && out.contains("Valid cloud-config"),
            "{name}: cloud-init schema refused:\n{out}\n---\n{ud}"
        );
        assert!(
            !out.to_ascii_lowercase().contains("deprecat"),
            "{name}: deprecated keys:\n{out}\n---\n{ud}"
        );
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn user_data_means_exactly_what_was_asked() {
    for (name, req, marker) in cases() {
        let p = plan(&req, &marker);
        let d = scratch(name);
        let f = d.join("user-data");
        std::fs::write(&f, seed_file(&p, "user-data").unwrap()).unwrap();
        let v = load_yaml(&f);
        let _ = std::fs::remove_dir_all(&d);

        let marker = marker.clone().unwrap_or_else(|| "NASVISOR-READY".into());
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = vec![
            "final_message",
            "hostname",
            "manage_etc_hosts",
            "preserve_hostname",
            "runcmd",
            "ssh_pwauth",
        ];
        if req.hostname.contains('.') {
            want.push("fqdn");
        }
        if !req.users.is_empty() {
            want.push("users");
        }
        if !req.packages.is_empty() {
            want.extend(["packages", "package_update"]);
        }
        if req.timezone.is_some() {
            want.push("timezone");
        }
        want.sort_unstable();
        assert_eq!(keys, want, "{name}: top-level keys");

        assert_eq!(
            v["hostname"],
            json!(req.hostname.split('.').next().unwrap()),
            "{name}"
        );
        assert_eq!(
            v["ssh_pwauth"],
            json!(req.users.iter().any(|u| u.password_hash.is_some())),
            "{name}"
        );
        assert_eq!(v["runcmd"].as_array().unwrap().len(), 1, "{name}");
        assert_eq!(
            v["runcmd"][0][4],
            json!(marker),
            "{name}: the marker reaches runcmd unchanged"
        );
        assert_eq!(v["runcmd"][0][0], json!("sh"), "{name}");
        if !marker.contains('$') {
            assert_eq!(v["final_message"], json!(marker), "{name}");
        }
        for (i, u) in req.users.iter().enumerate() {
            let got = &v["users"][i];
            assert_eq!(got["name"], json!(u.name), "{name}");
            let keys: Vec<String> = u
                .ssh_authorized_keys
                .iter()
                .map(|k| k.trim().to_string())
                .collect();
            if keys.is_empty() {
                assert!(got.get("ssh_authorized_keys").is_none(), "{name}");
            } else {
                assert_eq!(
                    got["ssh_authorized_keys"],
                    json!(keys),
                    "{name}: keys round-trip exactly"
                );
            }
            assert_eq!(
                got["lock_passwd"],
                json!(u.password_hash.is_none()),
                "{name}"
            );
            match &u.password_hash {
                Some(h) => assert_eq!(got["passwd"], json!(h), "{name}"),
                None => assert!(got.get("passwd").is_none(), "{name}"),
            }
            if u.sudo {
                assert_eq!(got["sudo"], json!("ALL=(ALL) NOPASSWD:ALL"), "{name}");
            } else {
                assert!(got.get("sudo").is_none(), "{name}");
            }
        }
        if !req.packages.is_empty() {
            assert_eq!(v["packages"], json!(req.packages), "{name}");
            assert_eq!(v["package_update"], json!(true), "{name}");
        }
    }
}

/// Whether this cloud-init can validate network-config itself.
fn has_network_schema() -> bool {
    let (_, out) = run(Command::new(cloud_init()).args(["schema", "--help"]));
    out.contains("--schema-type")
}

#[test]
fn network_config_is_accepted_by_cloud_init() {
    let native = has_network_schema();
    for (name, req, marker) in cases() {
        let p = plan(&req, &marker);
        let Some(nc) = seed_file(&p, "network-config") else {
            assert!(req.nics.is_empty(), "{name}: NICs but no network-config");
            continue;
        };
        let d = scratch(name);
        let f = d.join("network-config");
        std::fs::write(&f, nc).unwrap();
        if native {
            let (ok, out) = run(Command::new(cloud_init())
                .args(["schema", "--schema-type", "network-config", "--config-file"])
                .arg(&f));
            assert!(
                ok,
                "{name}: cloud-init schema refused network-config:\n{out}\n---\n{nc}"
            );
        }
        // cloud-init's own v2 parser and two renderers.
        for (distro, kind) in [("debian", "networkd"), ("ubuntu", "netplan")] {
            let out_dir = d.join(kind);
            let (ok, out) = run(Command::new(cloud_init())
                .args([
                    "devel",
                    "net-convert",
                    "-k",
                    "yaml",
                    "-D",
                    distro,
                    "-O",
                    kind,
                    "-p",
                ])
                .arg(&f)
                .arg("-d")
                .arg(&out_dir));
            assert!(
                ok,
                "{name}: cloud-init net-convert ({distro}/{kind}) failed:\n{out}\n---\n{nc}"
            );
        }
        // The networkd rendering carries the addresses, routes and DNS asked for.
        for (i, n) in req.nics.iter().enumerate() {
            let unit = d.join(format!(
                "networkd/etc/systemd/network/10-cloud-init-nic{i}.network"
            ));
            let text = std::fs::read_to_string(&unit)
                .unwrap_or_else(|e| panic!("{name}: {}: {e}", unit.display()));
            assert!(
                text.contains(&format!("MACAddress={}", n.mac.to_ascii_lowercase())),
                "{name}: {text}"
            );
            assert!(text.contains(&format!("Name=nic{i}")), "{name}: {text}");
            for a in &n.addresses {
                let a: std::net::IpAddr = a.split('/').next().unwrap().parse().unwrap();
                assert!(
                    text.contains(&format!("Address={a}/")),
                    "{name}: {a} missing from {text}"
                );
            }
            if let Some(gw) = &n.gateway4 {
                assert!(text.contains(&format!("Gateway={gw}")), "{name}: {text}");
            }
            for ns in &n.nameservers {
                let ns: std::net::IpAddr = ns.parse().unwrap();
                assert!(
                    text.contains(&ns.to_string()),
                    "{name}: DNS {ns} missing from {text}"
                );
            }
            assert_eq!(text.contains("DHCP=ipv4"), n.dhcp4, "{name}: {text}");
        }
        // Structure, as PyYAML reads it.
        let v = load_yaml(&f);
        assert_eq!(v["version"], json!(2), "{name}");
        let eth = v["ethernets"].as_object().unwrap();
        assert_eq!(eth.len(), req.nics.len(), "{name}");
        for (i, n) in req.nics.iter().enumerate() {
            let e = &eth[&format!("nic{i}")];
            assert_eq!(
                e["match"]["macaddress"],
                json!(n.mac.to_ascii_lowercase()),
                "{name}"
            );
            assert_eq!(e["set-name"], json!(format!("nic{i}")), "{name}");
            assert_eq!(e["dhcp4"], json!(n.dhcp4), "{name}");
            match &n.gateway4 {
                Some(gw) => assert_eq!(
                    e["routes"],
                    json!([{"to": "0.0.0.0/0", "via": gw}]),
                    "{name}"
                ),
                None => assert!(e.get("routes").is_none(), "{name}"),
            }
        }
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn meta_data_is_yaml_with_instance_id_and_hostname() {
    for (name, req, marker) in cases() {
        let p = plan(&req, &marker);
        let d = scratch(name);
        let f = d.join("meta-data");
        std::fs::write(&f, seed_file(&p, "meta-data").unwrap()).unwrap();
        let v = load_yaml(&f);
        let _ = std::fs::remove_dir_all(d);
        let obj = v.as_object().unwrap();
        assert_eq!(obj.len(), 2, "{name}: {v}");
        assert_eq!(v["local-hostname"], json!(req.hostname), "{name}");
        assert!(
            v["instance-id"]
                .as_str()
                .unwrap()
                .starts_with("iid-nasvisor-"),
            "{name}"
        );
    }
}
