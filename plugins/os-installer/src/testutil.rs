//! Fixtures shared by the OS installer's unit tests. The keys were made with
//! `ssh-keygen`, the hashes with `openssl passwd` and libxcrypt.

use nasvisor_plugin_sdk::prelude::*;

use crate::seed::Nic;

/// An env with these settings.
pub fn env_with(settings: &[(&str, &str)]) -> StaticEnv {
    StaticEnv::with_settings(settings)
}

pub const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOSU5lmFlS0xANPNh166AdH9idJfUdZ2E1MQR/Z1pkAZ alice@laptop";
pub const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDUYOk+yO+LXUFHULkCOKqm1OoIJ/Z0wJ+Osd2SVgos/dYjHJplSGXWH0r5nV5Rr/hFGOUrIU5LPpVf1yUzjQysJTa58y2D7361Y1VUkWUxd7jPnIgwLYn7jCIvHYU9vBK3HuVqgF8WLXwuFe7yf9d6C2w1JOXIpeJItb/FBzdSXyXHAjA3/u2ZfFhaVf4Epqyk4dcisXJqorRT2hpjn3rOfySn3CnodXS7il/9LbtE3EVWvrrg+AZ1OIm1I4Pe7hkRP9KCgzMj5yt9GVNbSkFQjxVlvb/FCHu9U2i1Xq38VSIt9YhGdfEO+lgkZKZcfRO/ucaUHuXwsY+66Ts9iA5p bob";
pub const ECDSA256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMWqA8VDldVaocTaINBJgVQUDq/B1JSSFCWbgBorJK52s2JfqU0XJOfmLjZmTSmhWvPxfKmmwlLdOijE9AOcLeo= carol";
pub const ECDSA256_NO_COMMENT: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMWqA8VDldVaocTaINBJgVQUDq/B1JSSFCWbgBorJK52s2JfqU0XJOfmLjZmTSmhWvPxfKmmwlLdOijE9AOcLeo=";
pub const ECDSA384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBAcSwpXG49iOyxqPLXrJKAhEUvzw4b3qlD7dwc1duEE68KoHt8P5D8HQ8zchCpkAT1pqqNZ/kCJRInv99ZvGbvyoB/skkJIVSYK4ujTtY1iByaLIKp3bayymVaBrRJD5/Q== x";

pub const SHA512_HASH: &str = "$6$abcdefgh$ltjgWl6579NluT/Vi1nwEvcil.G5Nbc4NiXZaNGStk8PSwGfQv72N2CKPPrVACtLtip/cZ/1GM/O6IND4WQhG.";
pub const SHA512_ROUNDS_HASH: &str = "$6$rounds=10000$saltsalt$WowrPBpEDVlCoruBosYlrZycTCx3//TyDHYqEhX9DUHHt0XTztUqzQDDUuvUGRA8aUe9p55hcAxeGcu58sm3u.";
pub const SHA256_HASH: &str = "$5$abcdefgh$gruCpC7VkOTspMQTTSAR8mtlO9Upms.fwqE5y16JVM.";
pub const YESCRYPT_HASH: &str =
    "$y$j9T$H5K6eASF8fxtUWFdrwlSo0$GzAaoMJdzJoksPW/OQkxulEdtea5SbpprMnANdULPR.";
pub const GOST_YESCRYPT_HASH: &str =
    "$gy$j9T$3K4uEWuJZoccUewje3jgY0$dyRapD9i.xT2aNeZ5xhtqU19Xt2X2ySgK8wZHH2tBNB";
pub const SCRYPT_HASH: &str =
    "$7$CU..../....abcdefghijklmnop$XFPPWJganQ6Nq0QhVHxk/yHxMXizE0OJDowAsO4.RIA";
pub const BCRYPT_HASH: &str = "$2b$12$4g72IA9AnL7FOSir1SOS4OWmFo5DV08wY7rASofty1H02wAVlVnlC";

/// A 2 GiB cloud-init qcow2 image booting with UEFI.
pub fn disk_image() -> ImageMeta {
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

/// An installer ISO booting with BIOS.
pub fn iso_image(cloud_init: bool) -> ImageMeta {
    ImageMeta {
        id: "win-2022".into(),
        name: "Windows Server 2022".into(),
        format: ImageFormat::Iso,
        os_family: "windows".into(),
        os_variant: "win2k22".into(),
        cloud_init,
        firmware: Firmware::Bios,
        virtual_size_bytes: 0,
        ready_marker: None,
    }
}

/// A request using every feature: two users, packages, a static and a DHCP
/// NIC, a time zone and a 20 GiB disk.
pub fn full_request() -> InstallRequest {
    InstallRequest {
        vm_name: "vm1".into(),
        hostname: "web01.example.com".into(),
        users: vec![
            UserSpec {
                name: "alice".into(),
                password_hash: Some(SHA512_HASH.into()),
                ssh_authorized_keys: vec![ED25519.into()],
                sudo: true,
                groups: vec!["adm".into(), "sudo".into()],
                shell: Some("/bin/bash".into()),
            },
            UserSpec {
                name: "bob".into(),
                password_hash: None,
                ssh_authorized_keys: vec![RSA.into()],
                sudo: false,
                groups: vec![],
                shell: None,
            },
        ],
        packages: vec!["nginx".into(), "qemu-guest-agent".into()],
        nics: vec![
            NicSettings {
                mac: "52:54:00:12:34:56".into(),
                dhcp4: false,
                addresses: vec!["192.0.2.10/24".into(), "2001:db8::10/64".into()],
                gateway4: Some("192.0.2.1".into()),
                nameservers: vec!["192.0.2.53".into(), "2001:db8::53".into()],
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

/// The NICs of [`full_request`] after validation.
pub fn checked_nics() -> Vec<Nic> {
    crate::plan::check_request(&full_request()).unwrap()
}
