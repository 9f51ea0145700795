//! `plan-install`: validate an install request against an image and turn it
//! into an install plan.
//!
//! **Disk images** (qcow2, raw, vmdk, vdi) must run cloud-init. The disk is
//! made with the `disk-method` setting (a qcow2 overlay backed by the image by
//! default) and grown to `disk-size-gib` when that is larger than the image;
//! a smaller size is refused. The seed holds `meta-data`, `user-data` and,
//! when NICs are given, `network-config`. The install is complete when the
//! ready marker appears on the serial console: the image's own marker if it
//! names one, else the `ready-marker` setting; the generated user-data prints
//! it at the end of the first boot.
//!
//! **Installer ISOs** are attached as a CD-ROM and installed onto a blank disk
//! by their own installer; the install is complete when the guest powers off.
//! The blank disk is planned as method `full-convert` (an independent disk,
//! never a qcow2 overlay backed by the ISO) with `resize-gib` = the requested
//! size, which is therefore required. An ISO that runs cloud-init still gets
//! the seed; for one that does not, users, packages, NICs and a time zone
//! cannot be applied and are refused rather than silently dropped.
//!
//! Every field is validated first (see [`crate::validate`]); the first
//! problem is returned as `invalid-input` naming the field.

use std::collections::BTreeMap;
use std::net::IpAddr;

use nasvisor_plugin_sdk::prelude::*;

use crate::seed::{self, Nic};
use crate::settings::Settings;
use crate::validate::{self, invalid, show};

/// Bytes in a GiB.
const GIB: u64 = 1 << 30;
/// Most users per request.
pub const MAX_USERS: usize = 64;
/// Most SSH keys or groups per user.
pub const MAX_PER_USER: usize = 64;
/// Most packages per request.
pub const MAX_PACKAGES: usize = 512;
/// Most NICs per request.
pub const MAX_NICS: usize = 32;
/// Most addresses or name servers per NIC.
pub const MAX_PER_NIC: usize = 16;
/// Largest disk, in GiB (64 TiB; the host refuses more).
pub const MAX_DISK_GIB: u64 = 65_536;
/// Largest seed, all files together (the host refuses more).
pub use nasvisor_plugin_sdk::limits::MAX_SEED_BYTES;

/// A list may hold at most `max` entries.
fn at_most<T>(field: &str, list: &[T], max: usize) -> Result<(), PluginError> {
    if list.len() > max {
        Err(invalid(
            field,
            format!("has {} entries, more than {max}", list.len()),
        ))
    } else {
        Ok(())
    }
}

/// Validate the users of a request.
fn check_users(users: &[UserSpec]) -> Result<(), PluginError> {
    at_most("users", users, MAX_USERS)?;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for (i, u) in users.iter().enumerate() {
        let f = format!("users[{i}]");
        validate::account_name(&format!("{f}.name"), &u.name)?;
        if let Some(j) = seen.insert(&u.name, i) {
            return Err(invalid(
                &format!("{f}.name"),
                format!("{} is already users[{j}]", show(&u.name)),
            ));
        }
        if let Some(h) = &u.password_hash {
            validate::password_hash(&format!("{f}.password-hash"), h)?;
        }
        at_most(
            &format!("{f}.ssh-authorized-keys"),
            &u.ssh_authorized_keys,
            MAX_PER_USER,
        )?;
        for (j, k) in u.ssh_authorized_keys.iter().enumerate() {
            validate::ssh_key(&format!("{f}.ssh-authorized-keys[{j}]"), k.trim())?;
        }
        at_most(&format!("{f}.groups"), &u.groups, MAX_PER_USER)?;
        for (j, g) in u.groups.iter().enumerate() {
            validate::account_name(&format!("{f}.groups[{j}]"), g)?;
        }
        if let Some(sh) = &u.shell {
            validate::shell(&format!("{f}.shell"), sh)?;
        }
    }
    Ok(())
}

/// Validate the NICs of a request and put them in their seed form.
fn check_nics(nics: &[NicSettings]) -> Result<Vec<Nic>, PluginError> {
    at_most("nics", nics, MAX_NICS)?;
    let mut out: Vec<Nic> = Vec::with_capacity(nics.len());
    for (i, n) in nics.iter().enumerate() {
        let f = format!("nics[{i}]");
        let mac = validate::mac(&format!("{f}.mac"), &n.mac)?;
        if let Some(j) = out.iter().position(|o| o.mac == mac) {
            return Err(invalid(
                &format!("{f}.mac"),
                format!("{} is already the MAC of nics[{j}]", show(&n.mac)),
            ));
        }
        at_most(&format!("{f}.addresses"), &n.addresses, MAX_PER_NIC)?;
        let mut addresses = Vec::with_capacity(n.addresses.len());
        for (j, a) in n.addresses.iter().enumerate() {
            addresses.push(validate::cidr(&format!("{f}.addresses[{j}]"), a)?);
        }
        let gateway4 = match &n.gateway4 {
            None => None,
            Some(g) => {
                let field = format!("{f}.gateway4");
                let gw = validate::ipv4(&field, g)?;
                let v4: Vec<_> = addresses.iter().filter(|a| a.addr.is_ipv4()).collect();
                if v4.is_empty() {
                    if !n.dhcp4 {
                        return Err(invalid(
                            &field,
                            "needs a static IPv4 address or dhcp4 on the same NIC",
                        ));
                    }
                } else if v4.iter().any(|a| a.addr == IpAddr::V4(gw)) {
                    return Err(invalid(&field, format!("{gw} is the NIC's own address")));
                } else if !v4.iter().any(|a| a.contains_v4(gw)) {
                    return Err(invalid(
                        &field,
                        format!("{gw} is not in any of the NIC's IPv4 subnets"),
                    ));
                }
                Some(gw)
            }
        };
        at_most(&format!("{f}.nameservers"), &n.nameservers, MAX_PER_NIC)?;
        let mut nameservers = Vec::with_capacity(n.nameservers.len());
        for (j, s) in n.nameservers.iter().enumerate() {
            nameservers.push(validate::ip(&format!("{f}.nameservers[{j}]"), s)?);
        }
        out.push(Nic {
            id: format!("nic{i}"),
            mac,
            dhcp4: n.dhcp4,
            addresses,
            gateway4,
            nameservers,
        });
    }
    Ok(out)
}

/// Validate every field of a request that reaches the seed; return the NICs
/// in their seed form.
pub fn check_request(req: &InstallRequest) -> Result<Vec<Nic>, PluginError> {
    if req.vm_name.trim().is_empty() {
        return Err(invalid("vm-name", "must not be empty"));
    }
    validate::hostname("hostname", &req.hostname)?;
    check_users(&req.users)?;
    at_most("packages", &req.packages, MAX_PACKAGES)?;
    for (i, p) in req.packages.iter().enumerate() {
        validate::package(&format!("packages[{i}]"), p)?;
    }
    let nics = check_nics(&req.nics)?;
    if let Some(tz) = &req.timezone {
        validate::timezone("timezone", tz)?;
    }
    Ok(nics)
}

/// How to name an image in messages: `"id" (name)`.
fn image_label(image: &ImageMeta) -> String {
    if image.name.is_empty() || image.name == image.id {
        show(&image.id)
    } else {
        format!("{} ({})", show(&image.id), image.name)
    }
}

/// The seed files for a validated request; refused when they would exceed
/// [`MAX_SEED_BYTES`].
fn seed_files(
    req: &InstallRequest,
    nics: &[Nic],
    marker: &str,
) -> Result<Vec<SeedFile>, PluginError> {
    let mut seed = vec![
        SeedFile {
            name: "meta-data".into(),
            contents: seed::meta_data(&req.vm_name, &req.hostname),
        },
        SeedFile {
            name: "user-data".into(),
            contents: seed::user_data(req, marker),
        },
    ];
    if let Some(n) = seed::network_config(nics) {
        seed.push(SeedFile {
            name: "network-config".into(),
            contents: n,
        });
    }
    let total: usize = seed.iter().map(|f| f.contents.len()).sum();
    if total > MAX_SEED_BYTES {
        return Err(PluginError::new(
            ErrorCode::InvalidInput,
            format!("the request is too large: its cloud-init seed would be {total} bytes (at most {MAX_SEED_BYTES})"),
        ));
    }
    Ok(seed)
}

/// `disk-size-gib` may not exceed [`MAX_DISK_GIB`].
fn check_disk_size(gib: u64) -> Result<(), PluginError> {
    if gib > MAX_DISK_GIB {
        Err(invalid(
            "disk-size-gib",
            format!("{gib} GiB is more than the {MAX_DISK_GIB} GiB supported"),
        ))
    } else {
        Ok(())
    }
}

/// Turn an image and a request into an install plan. See the module docs.
///
/// Errors: `invalid-input` naming the field for a bad request or image
/// metadata; `bad-settings` naming the key for a bad setting.
pub fn plan_install(
    env: &dyn Env,
    image: &ImageMeta,
    req: &InstallRequest,
) -> Result<InstallPlan, PluginError> {
    let s = Settings::load(env)?;
    let marker = match &image.ready_marker {
        Some(m) => {
            validate::marker(m).map_err(|e| invalid("image.ready-marker", e))?;
            m.clone()
        }
        None => s.ready_marker.clone(),
    };
    let label = image_label(image);
    check_disk_size(req.disk_size_gib)?;
    if image.format == ImageFormat::Iso {
        if req.disk_size_gib == 0 {
            return Err(invalid(
                "disk-size-gib",
                format!("installing from the ISO {label} needs the size of the blank disk (more than 0 GiB)"),
            ));
        }
        let seed = if image.cloud_init {
            let nics = check_request(req)?;
            seed_files(req, &nics, &marker)?
        } else {
            let mut unusable = Vec::new();
            for (field, given) in [
                ("users", !req.users.is_empty()),
                ("packages", !req.packages.is_empty()),
                ("nics", !req.nics.is_empty()),
                ("timezone", req.timezone.is_some()),
            ] {
                if given {
                    unusable.push(field);
                }
            }
            if !unusable.is_empty() {
                return Err(PluginError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "image {label} does not support cloud-init, so {} cannot be applied; configure them in its installer",
                        unusable.join(", ")
                    ),
                ));
            }
            if !req.hostname.is_empty() {
                validate::hostname("hostname", &req.hostname)?;
            }
            Vec::new()
        };
        env.log(
            LogLevel::Info,
            "planned ISO install",
            &[("image", &image.id), ("vm", &req.vm_name)],
        );
        return Ok(InstallPlan {
            disk: DiskPlan {
                method: DiskMethod::FullConvert,
                resize_gib: Some(req.disk_size_gib),
            },
            seed,
            boot: BootSettings {
                firmware: image.firmware,
                kernel_args: None,
                attach_image_as_cdrom: true,
            },
            completion: Completion::PowerOff,
            timeout_ms: s.install_timeout_ms,
        });
    }

    if !image.cloud_init {
        return Err(PluginError::new(
            ErrorCode::InvalidInput,
            format!("image {label} does not support cloud-init, so it cannot be configured automatically"),
        ));
    }
    if image.virtual_size_bytes == 0 {
        return Err(invalid(
            "image.virtual-size-bytes",
            format!("image {label} reports a virtual size of 0 bytes"),
        ));
    }
    let nics = check_request(req)?;
    let image_gib = image.virtual_size_bytes.div_ceil(GIB);
    let resize_gib = match req.disk_size_gib {
        0 => None,
        n if n < image_gib => {
            return Err(invalid(
                "disk-size-gib",
                format!(
                    "{n} GiB is smaller than the {image_gib} GiB virtual size of image {label}"
                ),
            ))
        }
        n if n == image_gib => None,
        n => Some(n),
    };
    env.log(
        LogLevel::Info,
        "planned image install",
        &[("image", &image.id), ("vm", &req.vm_name)],
    );
    Ok(InstallPlan {
        disk: DiskPlan {
            method: s.disk_method,
            resize_gib,
        },
        seed: seed_files(req, &nics, &marker)?,
        boot: BootSettings {
            firmware: image.firmware,
            kernel_args: None,
            attach_image_as_cdrom: false,
        },
        completion: Completion::SerialMarker(marker),
        timeout_ms: s.install_timeout_ms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::*;

    fn plan(image: &ImageMeta, req: &InstallRequest) -> Result<InstallPlan, PluginError> {
        plan_install(&env_with(&[]), image, req)
    }

    fn err(image: &ImageMeta, req: &InstallRequest) -> String {
        let e = plan(image, req).unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidInput, "{}", e.message);
        e.message
    }

    fn file<'p>(p: &'p InstallPlan, name: &str) -> &'p str {
        &p.seed
            .iter()
            .find(|f| f.name == name)
            .unwrap_or_else(|| panic!("no {name}"))
            .contents
    }

    #[test]
    fn disk_image_plan() {
        let p = plan(&disk_image(), &full_request()).unwrap();
        assert_eq!(
            p.disk,
            DiskPlan {
                method: DiskMethod::CloneBacking,
                resize_gib: Some(20)
            }
        );
        assert_eq!(
            p.boot,
            BootSettings {
                firmware: Firmware::Uefi,
                kernel_args: None,
                attach_image_as_cdrom: false
            }
        );
        assert_eq!(
            p.completion,
            Completion::SerialMarker("NASVISOR-READY".into())
        );
        assert_eq!(p.timeout_ms, 600_000);
        let names: Vec<&str> = p.seed.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, vec!["meta-data", "user-data", "network-config"]);
        assert!(file(&p, "user-data").starts_with("#cloud-config\n"));
        assert!(file(&p, "user-data").contains("\"nasvisor-ready\", \"NASVISOR-READY\"]"));
        assert!(file(&p, "meta-data").contains("local-hostname: \"web01.example.com\""));
        assert!(file(&p, "network-config").contains("macaddress: \"52:54:00:12:34:56\""));
    }

    #[test]
    fn no_nics_means_no_network_config() {
        let mut r = full_request();
        r.nics.clear();
        let p = plan(&disk_image(), &r).unwrap();
        assert!(p.seed.iter().all(|f| f.name != "network-config"));
    }

    #[test]
    fn settings_change_method_marker_and_timeout() {
        let env = env_with(&[
            ("disk-method", "full-convert"),
            ("ready-marker", "UP"),
            ("install-timeout-ms", "5000"),
        ]);
        let p = plan_install(&env, &disk_image(), &full_request()).unwrap();
        assert_eq!(p.disk.method, DiskMethod::FullConvert);
        assert_eq!(p.completion, Completion::SerialMarker("UP".into()));
        assert_eq!(p.timeout_ms, 5000);
        let e = plan_install(
            &env_with(&[("disk-method", "cp")]),
            &disk_image(),
            &full_request(),
        )
        .unwrap_err();
        assert_eq!(e.code, ErrorCode::BadSettings);
        assert!(e.message.contains("disk-method"));
    }

    #[test]
    fn image_marker_wins_over_setting() {
        let mut img = disk_image();
        img.ready_marker = Some("Cloud-init finished".into());
        let p = plan_install(&env_with(&[("ready-marker", "UP")]), &img, &full_request()).unwrap();
        assert_eq!(
            p.completion,
            Completion::SerialMarker("Cloud-init finished".into())
        );
        assert!(file(&p, "user-data").contains("final_message: \"Cloud-init finished\""));
        img.ready_marker = Some("two\nlines".into());
        assert!(err(&img, &full_request()).starts_with("image.ready-marker: "));
    }

    #[test]
    fn disk_sizes() {
        let mut r = full_request();
        let mut img = disk_image(); // 10 GiB + 1 byte -> 11 GiB
        img.virtual_size_bytes = 10 * GIB + 1;
        r.disk_size_gib = 0;
        assert_eq!(plan(&img, &r).unwrap().disk.resize_gib, None);
        r.disk_size_gib = 11;
        assert_eq!(plan(&img, &r).unwrap().disk.resize_gib, None);
        r.disk_size_gib = 12;
        assert_eq!(plan(&img, &r).unwrap().disk.resize_gib, Some(12));
        r.disk_size_gib = 10;
        let m = err(&img, &r);
        assert!(m.starts_with("disk-size-gib: 10 GiB is smaller than the 11 GiB virtual size of image \"debian-12\""), "{m}");
        img.virtual_size_bytes = 10 * GIB;
        assert_eq!(plan(&img, &r).unwrap().disk.resize_gib, None);
        img.virtual_size_bytes = 0;
        assert!(err(&img, &r).starts_with("image.virtual-size-bytes: "));
    }

    #[test]
    fn disk_image_without_cloud_init_is_refused() {
        let mut img = disk_image();
        img.cloud_init = false;
        let m = err(&img, &full_request());
        assert!(
            m.contains("image \"debian-12\" (Debian 12) does not support cloud-init"),
            "{m}"
        );
    }

    #[test]
    fn iso_without_cloud_init() {
        let r = InstallRequest {
            vm_name: "vm1".into(),
            hostname: "win01".into(),
            disk_size_gib: 64,
            ..Default::default()
        };
        let p = plan(&iso_image(false), &r).unwrap();
        assert_eq!(
            p.disk,
            DiskPlan {
                method: DiskMethod::FullConvert,
                resize_gib: Some(64)
            }
        );
        assert!(p.seed.is_empty());
        assert_eq!(
            p.boot,
            BootSettings {
                firmware: Firmware::Bios,
                kernel_args: None,
                attach_image_as_cdrom: true
            }
        );
        assert_eq!(p.completion, Completion::PowerOff);
        // Settings that cannot be applied are refused, not dropped.
        let mut r2 = full_request();
        r2.disk_size_gib = 64;
        let m = err(&iso_image(false), &r2);
        assert!(
            m.contains(
                "does not support cloud-init, so users, packages, nics, timezone cannot be applied"
            ),
            "{m}"
        );
        // A blank disk needs a size.
        let mut r3 = r.clone();
        r3.disk_size_gib = 0;
        assert!(err(&iso_image(false), &r3).starts_with("disk-size-gib: "));
        // The host name is still checked when given, and may be empty.
        let mut r4 = r.clone();
        r4.hostname = "Bad_Name".into();
        assert!(err(&iso_image(false), &r4).starts_with("hostname: "));
        r4.hostname.clear();
        assert!(plan(&iso_image(false), &r4).is_ok());
    }

    #[test]
    fn iso_with_cloud_init_gets_a_seed() {
        let mut r = full_request();
        r.disk_size_gib = 64;
        let p = plan(&iso_image(true), &r).unwrap();
        assert!(p.boot.attach_image_as_cdrom);
        assert_eq!(p.completion, Completion::PowerOff);
        assert_eq!(p.seed.len(), 3);
        r.hostname = "-x".into();
        assert!(err(&iso_image(true), &r).starts_with("hostname: "));
    }

    #[test]
    fn every_field_is_named_in_errors() {
        type Mutation = Box<dyn Fn(&mut InstallRequest)>;
        let cases: Vec<(&str, Mutation)> = vec![
            ("vm-name: ", Box::new(|r| r.vm_name = " ".into())),
            (
                "hostname: ",
                Box::new(|r| r.hostname = "web01\nruncmd:".into()),
            ),
            (
                "users[1].name: ",
                Box::new(|r| r.users[1].name = "Bob".into()),
            ),
            (
                "users[1].name: \"alice\" is already users[0]",
                Box::new(|r| r.users[1].name = "alice".into()),
            ),
            (
                "users[0].password-hash: ",
                Box::new(|r| r.users[0].password_hash = Some("hunter2".into())),
            ),
            (
                "users[0].ssh-authorized-keys[0]: ",
                Box::new(|r| {
                    r.users[0].ssh_authorized_keys[0] = "ssh-ed25519 AAAA\nssh-rsa B".into()
                }),
            ),
            (
                "users[0].groups[1]: ",
                Box::new(|r| r.users[0].groups[1] = "wheel group".into()),
            ),
            (
                "users[0].shell: ",
                Box::new(|r| r.users[0].shell = Some("bash".into())),
            ),
            (
                "packages[1]: ",
                Box::new(|r| r.packages[1] = "x; rm -rf /".into()),
            ),
            ("nics[0].mac: ", Box::new(|r| r.nics[0].mac = "nope".into())),
            (
                "nics[1].mac: \"52:54:00:12:34:56\" is already the MAC of nics[0]",
                Box::new(|r| r.nics[1].mac = "52:54:00:12:34:56".into()),
            ),
            (
                "nics[0].addresses[1]: ",
                Box::new(|r| r.nics[0].addresses[1] = "2001:db8::10".into()),
            ),
            (
                "nics[0].gateway4: ",
                Box::new(|r| r.nics[0].gateway4 = Some("2001:db8::1".into())),
            ),
            (
                "nics[0].gateway4: 198.51.100.1 is not in any",
                Box::new(|r| r.nics[0].gateway4 = Some("198.51.100.1".into())),
            ),
            (
                "nics[0].gateway4: 192.0.2.10 is the NIC's own address",
                Box::new(|r| r.nics[0].gateway4 = Some("192.0.2.10".into())),
            ),
            (
                "nics[1].gateway4: needs a static IPv4 address or dhcp4",
                Box::new(|r| {
                    r.nics[1].dhcp4 = false;
                    r.nics[1].gateway4 = Some("192.0.2.1".into());
                }),
            ),
            (
                "nics[0].nameservers[0]: ",
                Box::new(|r| r.nics[0].nameservers[0] = "dns.example".into()),
            ),
            (
                "timezone: ",
                Box::new(|r| r.timezone = Some("../../etc/shadow".into())),
            ),
            (
                "users: has 65 entries",
                Box::new(|r| {
                    r.users = (0..65)
                        .map(|i| UserSpec {
                            name: format!("u{i}"),
                            ..Default::default()
                        })
                        .collect()
                }),
            ),
        ];
        for (prefix, mutate) in cases {
            let mut r = full_request();
            mutate(&mut r);
            let m = err(&disk_image(), &r);
            assert!(m.starts_with(prefix), "want {prefix:?}, got {m:?}");
        }
    }

    #[test]
    fn dhcp_nic_may_carry_a_gateway() {
        let mut r = full_request();
        r.nics[1].gateway4 = Some("10.0.0.1".into());
        let p = plan(&disk_image(), &r).unwrap();
        assert!(file(&p, "network-config").contains("via: \"10.0.0.1\""));
    }

    #[test]
    fn hostile_strings_stay_inside_their_scalars() {
        let mut r = full_request();
        let comment = "x\" \\ : # {a: b} [c] &d *e !f |g >h '%@`";
        r.users[0].ssh_authorized_keys = vec![format!("{ED25519} {comment}")];
        let img = ImageMeta {
            ready_marker: Some("READY\" # \\n: x".into()),
            ..disk_image()
        };
        let p = plan(&img, &r).unwrap();
        let ud = file(&p, "user-data");
        // Every line is either a structural line we wrote or carries the
        // hostile text inside one double-quoted scalar.
        for line in ud.lines() {
            assert!(
                !line.trim_start().starts_with('#') || line == "#cloud-config",
                "{line}"
            );
        }
        assert!(
            ud.contains("x\\\" \\\\ : # {a: b} [c] &d *e !f |g >h '%@`\""),
            "{ud}"
        );
        assert!(
            ud.contains("final_message: \"READY\\\" # \\\\n: x\""),
            "{ud}"
        );
        assert_eq!(ud.matches("\nfinal_message:").count(), 1);
    }

    #[test]
    fn disk_size_and_seed_size_limits() {
        let mut r = full_request();
        r.disk_size_gib = MAX_DISK_GIB;
        assert_eq!(
            plan(&disk_image(), &r).unwrap().disk.resize_gib,
            Some(MAX_DISK_GIB)
        );
        r.disk_size_gib = MAX_DISK_GIB + 1;
        assert!(err(&disk_image(), &r).starts_with("disk-size-gib: 65537 GiB is more than"));
        assert!(err(
            &iso_image(false),
            &InstallRequest {
                disk_size_gib: MAX_DISK_GIB + 1,
                ..Default::default()
            }
        )
        .starts_with("disk-size-gib: "));

        let mut big = full_request();
        big.users = (0..MAX_USERS)
            .map(|i| UserSpec {
                name: format!("u{i}"),
                ssh_authorized_keys: vec![RSA.to_string(); MAX_PER_USER],
                ..Default::default()
            })
            .collect();
        let m = err(&disk_image(), &big);
        assert!(
            m.contains("seed would be") && m.contains("at most 1048576"),
            "{m}"
        );
    }

    #[test]
    fn plan_is_deterministic() {
        let a = plan(&disk_image(), &full_request()).unwrap();
        let b = plan(&disk_image(), &full_request()).unwrap();
        assert_eq!(a, b);
    }
}
