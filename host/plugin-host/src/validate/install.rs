//! Install plans, checked against the request: the seed files (names, size,
//! and the contents of each: [`meta_data`], [`network_config`], and
//! [`cloud_config`] for `user-data` and `vendor-data`), the disk size against
//! the request and the pool's free space, kernel arguments against an
//! allow-list, the completion signal and the timeout.

use super::cloud_config::{self, same_set};
use super::yaml::{self, Node};
use super::{show, text, MAX_SEED_BYTES};
use nasvisor_plugin_sdk::prelude::*;
use nasvisor_plugin_sdk::seed;
use std::collections::HashSet;
use std::net::IpAddr;

const GIB: u64 = 1 << 30;
/// Largest disk, in GiB (64 TiB).
pub(super) const MAX_DISK_GIB: u64 = 65_536;

pub(super) fn plan(
    image: &ImageMeta,
    req: &InstallRequest,
    pool_free_bytes: Option<u64>,
    p: &InstallPlan,
) -> Result<(), String> {
    const NAMES: [&str; 4] = ["meta-data", "user-data", "network-config", "vendor-data"];
    let mut seen = HashSet::new();
    let mut total = 0usize;
    for f in &p.seed {
        if !NAMES.contains(&f.name.as_str()) {
            return Err(format!(
                "seed file {} is not a NoCloud file (meta-data, user-data, network-config, vendor-data)",
                show(&f.name)
            ));
        }
        if !seen.insert(f.name.as_str()) {
            return Err(format!("seed file {:?} appears twice", f.name));
        }
        total += f.contents.len();
    }
    if total > MAX_SEED_BYTES {
        return Err(format!("seed is {total} bytes (at most {MAX_SEED_BYTES})"));
    }
    if image.format != ImageFormat::Iso
        && !(seen.contains("meta-data") && seen.contains("user-data"))
    {
        return Err("seed lacks meta-data or user-data".into());
    }
    if !(1_000..=86_400_000).contains(&p.timeout_ms) {
        return Err(format!(
            "timeout-ms {} is out of range (1000..=86400000)",
            p.timeout_ms
        ));
    }
    disk(image, req, pool_free_bytes, &p.disk)?;
    let marker = match &p.completion {
        Completion::SerialMarker(m) => {
            if m.is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
                return Err("serial marker must be 1 to 256 characters on one line".into());
            }
            Some(m.as_str())
        }
        _ => None,
    };
    if let Some(k) = &p.boot.kernel_args {
        kernel_args(k)?;
    }
    for f in &p.seed {
        match f.name.as_str() {
            "meta-data" => meta_data(req, &f.contents)?,
            "user-data" => cloud_config::check("user-data", &f.contents, req, marker, true)?,
            "vendor-data" => cloud_config::check("vendor-data", &f.contents, req, marker, false)?,
            _ => network_config(req, &f.contents)?,
        }
    }
    if !p.seed.is_empty() && !req.nics.is_empty() && !seen.contains("network-config") {
        return Err(format!(
            "seed lacks network-config for the {} requested NICs",
            req.nics.len()
        ));
    }
    Ok(())
}

/// The disk's size: a resize is the requested size (the image's own size
/// when the request keeps it), never smaller than the image, at most 64 TiB,
/// and the disk fits in the pool's free space.
fn disk(
    image: &ImageMeta,
    req: &InstallRequest,
    pool_free_bytes: Option<u64>,
    d: &DiskPlan,
) -> Result<(), String> {
    let iso = image.format == ImageFormat::Iso;
    let image_gib = image.virtual_size_bytes.div_ceil(GIB);
    if let Some(g) = d.resize_gib {
        if g > MAX_DISK_GIB {
            return Err(format!(
                "resize-gib {g} is over 64 TiB ({MAX_DISK_GIB} GiB)"
            ));
        }
        if !iso && g < image_gib {
            return Err(format!(
                "resize-gib {g} would shrink the image's {image_gib} GiB disk"
            ));
        }
        if req.disk_size_gib > 0 && g != req.disk_size_gib {
            return Err(format!(
                "resize-gib {g} differs from the requested disk-size-gib {}",
                req.disk_size_gib
            ));
        }
        if req.disk_size_gib == 0 && !iso && g != image_gib {
            return Err(format!(
                "resize-gib {g} differs from the image's {image_gib} GiB (the request keeps the image's size)"
            ));
        }
    }
    let size_gib = d
        .resize_gib
        .unwrap_or(if iso { req.disk_size_gib } else { image_gib });
    if let Some(free) = pool_free_bytes {
        if size_gib.saturating_mul(GIB) > free {
            return Err(format!(
                "the {size_gib} GiB disk does not fit in the pool's free space ({} GiB, {free} bytes)",
                free / GIB
            ));
        }
    }
    Ok(())
}

/// Kernel arguments: only words of this allow-list (image metadata carries
/// none), separated by spaces:
/// `console=tty0`, `console=hvc0`, `console=ttyS<0-3>[,<baud>[n8]]`,
/// `quiet`, `nomodeset`, `loglevel=<0-7>`, `net.ifnames=<0|1>`,
/// `biosdevname=<0|1>`, `panic=<seconds>`, `ds=nocloud`. Everything else is
/// refused: `init=`, `rdinit=`, `root=`, `single`, `emergency`,
/// `systemd.unit=`, `rd.break`, `ds=nocloud;s=URL` (a seed from the network),
/// security switches, quoting.
fn kernel_args(k: &str) -> Result<(), String> {
    text("kernel-args", k)?;
    if let Some(c) = k.chars().find(|c| !(' '..='~').contains(c) || *c == '"') {
        return Err(format!(
            "kernel-args contain {c:?}; only printable ASCII without quotes is accepted"
        ));
    }
    let digits = |s: &str| !s.is_empty() && s.len() <= 9 && s.bytes().all(|b| b.is_ascii_digit());
    for word in k.split(' ').filter(|w| !w.is_empty()) {
        let ok = match word.split_once('=') {
            None => matches!(word, "quiet" | "nomodeset"),
            Some(("console", v)) => {
                matches!(v, "tty0" | "hvc0") || {
                    let (dev, opts) = v.split_once(',').unwrap_or((v, ""));
                    let baud = opts.strip_suffix("n8").unwrap_or(opts);
                    matches!(dev, "ttyS0" | "ttyS1" | "ttyS2" | "ttyS3")
                        && (opts.is_empty() || digits(baud))
                }
            }
            Some(("loglevel", v)) => matches!(v, "0" | "1" | "2" | "3" | "4" | "5" | "6" | "7"),
            Some(("net.ifnames" | "biosdevname", v)) => matches!(v, "0" | "1"),
            Some(("panic", v)) => digits(v),
            Some(("ds", v)) => v == "nocloud",
            _ => false,
        };
        if !ok {
            return Err(format!(
                "kernel argument {} is not accepted (allowed: console=tty0|hvc0|ttyS0-3[,baud], quiet, nomodeset, loglevel=0-7, net.ifnames=0|1, biosdevname=0|1, panic=N, ds=nocloud)",
                show(word)
            ));
        }
    }
    Ok(())
}

/// `meta-data`: exactly `instance-id` (see [`seed::instance_id`]) and
/// `local-hostname` (the requested host name). `public-keys`,
/// `network-interfaces` and any other key are refused.
fn meta_data(req: &InstallRequest, text: &str) -> Result<(), String> {
    let root = yaml::parse("meta-data", text)?;
    let iid = seed::instance_id(&req.vm_name, &req.hostname);
    let (mut has_iid, mut has_host) = (false, false);
    for (k, v) in root.map("meta-data")? {
        let path = format!("meta-data.{k}");
        match k.as_str() {
            "instance-id" => {
                has_iid = true;
                let got = v.str(&path)?;
                if got != iid {
                    return Err(format!(
                        "{path} {} is not the request's instance id {iid:?}",
                        show(got)
                    ));
                }
            }
            "local-hostname" => {
                has_host = true;
                let got = v.str(&path)?;
                if got != req.hostname {
                    return Err(format!(
                        "{path} {} is not the requested host name {}",
                        show(got),
                        show(&req.hostname)
                    ));
                }
            }
            other => {
                return Err(format!(
                    "meta-data: the key {} is not accepted (only instance-id and local-hostname)",
                    show(other)
                ))
            }
        }
    }
    if !(has_iid && has_host) {
        return Err("meta-data lacks instance-id or local-hostname".into());
    }
    Ok(())
}

/// An address as written in a request or a seed, in a canonical form for
/// comparing: `ip[/prefix]` with the address normalised when it parses.
fn canonical(s: &str) -> String {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let a = a
        .parse::<IpAddr>()
        .map(|ip| ip.to_string())
        .unwrap_or_else(|_| a.to_string());
    match p {
        Some(p) => format!("{a}/{p}"),
        None => a,
    }
}

/// `network-config`: netplan version 2, one `ethernets` entry per requested
/// NIC, matched by MAC, with exactly its DHCP setting, addresses, default
/// route and name servers. Nothing else (no bonds, bridges, VLANs, Wi-Fi,
/// extra routes, search domains or renderer).
fn network_config(req: &InstallRequest, text: &str) -> Result<(), String> {
    const F: &str = "network-config";
    if req.nics.is_empty() {
        return Err(format!("{F} is given but the request has no NIC"));
    }
    let root = yaml::parse(F, text)?;
    let mut ethernets = None;
    let mut version = false;
    for (k, v) in root.map(F)? {
        match k.as_str() {
            "version" => {
                if *v != Node::Int(2) {
                    return Err(format!("{F}.version must be 2 (netplan version 2)"));
                }
                version = true;
            }
            "ethernets" => ethernets = Some(v.map(&format!("{F}.ethernets"))?),
            other => {
                return Err(format!(
                    "{F}: the key {} is not accepted (only version and ethernets)",
                    show(other)
                ))
            }
        }
    }
    let (true, Some(ethernets)) = (version, ethernets) else {
        return Err(format!("{F} lacks version or ethernets"));
    };
    let mut matched = vec![false; req.nics.len()];
    for (id, cfg) in ethernets {
        let path = format!("{F}.ethernets.{id}");
        let mut chars = id.chars();
        let good_id = chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && id.len() <= 15
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !good_id || id == "lo" {
            return Err(format!(
                "{path}: the id must be an interface name of a-z and 0-9, at most 15 characters, not \"lo\""
            ));
        }
        let entries = cfg.map(&path)?;
        let mac = entries
            .iter()
            .find(|(k, _)| k == "match")
            .ok_or_else(|| format!("{path} has no match"))?
            .1
            .map(&format!("{path}.match"))?;
        let mac = match mac {
            [(k, v)] if k == "macaddress" => v.str(&format!("{path}.match.macaddress"))?,
            _ => return Err(format!("{path}.match must hold only macaddress")),
        };
        let i = req
            .nics
            .iter()
            .position(|n| n.mac.eq_ignore_ascii_case(mac))
            .ok_or_else(|| {
                format!(
                    "{path}.match.macaddress {} is not the MAC of a requested NIC",
                    show(mac)
                )
            })?;
        if std::mem::replace(&mut matched[i], true) {
            return Err(format!("{path}: NIC {} is configured twice", show(mac)));
        }
        nic(&path, id, entries, &req.nics[i])?;
    }
    if let Some(i) = matched.iter().position(|m| !m) {
        return Err(format!(
            "{F} lacks the requested NIC {}",
            show(&req.nics[i].mac)
        ));
    }
    Ok(())
}

/// One `ethernets` entry against its requested NIC.
fn nic(path: &str, id: &str, entries: &[(String, Node)], n: &NicSettings) -> Result<(), String> {
    let gateway = n.gateway4.as_deref().map(canonical);
    let mut seen = HashSet::new();
    for (k, v) in entries {
        let p = format!("{path}.{k}");
        seen.insert(k.as_str());
        match k.as_str() {
            "match" => {}
            "set-name" => {
                if v.str(&p)? != id {
                    return Err(format!("{p} must be the entry's id {id:?}"));
                }
            }
            "dhcp4" => {
                if v.bool(&p)? != n.dhcp4 {
                    return Err(format!("{p} must be {} as requested", n.dhcp4));
                }
            }
            "addresses" => {
                let got: Vec<String> = v.strs(&p)?.into_iter().map(canonical).collect();
                let want: Vec<String> = n.addresses.iter().map(|a| canonical(a)).collect();
                same_set(
                    &p,
                    got.iter().map(String::as_str).collect(),
                    want.iter().map(String::as_str),
                )?;
            }
            "gateway4" => {
                let got = canonical(v.str(&p)?);
                if gateway.as_deref() != Some(got.as_str()) {
                    return Err(format!("{p} {} is not the requested gateway", show(&got)));
                }
            }
            "routes" => {
                let routes = v.seq(&p)?;
                let (Some(gw), [route]) = (&gateway, routes) else {
                    return Err(format!(
                        "{p}: only one default route through the requested gateway is accepted"
                    ));
                };
                let r = route.map(&format!("{p}[0]"))?;
                let mut to = None;
                let mut via = None;
                for (rk, rv) in r {
                    let rp = format!("{p}[0].{rk}");
                    match rk.as_str() {
                        "to" => to = Some(rv.str(&rp)?),
                        "via" => via = Some(canonical(rv.str(&rp)?)),
                        other => {
                            return Err(format!(
                                "{p}[0]: the key {} is not accepted (only to and via)",
                                show(other)
                            ))
                        }
                    }
                }
                if !matches!(to, Some("0.0.0.0/0" | "default")) || via.as_deref() != Some(gw) {
                    return Err(format!(
                        "{p}[0] must be the default route (to 0.0.0.0/0) via the requested gateway {gw:?}"
                    ));
                }
            }
            "nameservers" => match v.map(&p)? {
                [(k, list)] if k == "addresses" => {
                    let ap = format!("{p}.addresses");
                    let got: Vec<String> = list.strs(&ap)?.into_iter().map(canonical).collect();
                    let want: Vec<String> = n.nameservers.iter().map(|a| canonical(a)).collect();
                    same_set(
                        &ap,
                        got.iter().map(String::as_str).collect(),
                        want.iter().map(String::as_str),
                    )?;
                }
                _ => return Err(format!("{p} must hold only addresses")),
            },
            other => {
                return Err(format!(
                    "{path}: the key {} is not accepted (only match, set-name, dhcp4, addresses, routes or gateway4, nameservers)",
                    show(other)
                ))
            }
        }
    }
    if !seen.contains("dhcp4") && n.dhcp4 {
        return Err(format!(
            "{path} lacks dhcp4: true, which the request asks for"
        ));
    }
    for (key, asked) in [
        ("addresses", !n.addresses.is_empty()),
        ("nameservers", !n.nameservers.is_empty()),
    ] {
        if asked && !seen.contains(key) {
            return Err(format!("{path} lacks {key}, which the request asks for"));
        }
    }
    if gateway.is_some() && seen.contains("routes") == seen.contains("gateway4") {
        return Err(format!(
            "{path} must give the requested gateway once, as routes or gateway4"
        ));
    }
    Ok(())
}

#[cfg(test)]
#[path = "install_tests.rs"]
mod tests;
