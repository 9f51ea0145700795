//! The parts of a NoCloud seed that the host derives from an install request
//! itself and expects to find verbatim in a plan (see "What the validator
//! checks" in docs/plugins.md). The default os-installer builds its seed with
//! these functions, and the host's validator compares against them, so the two
//! agree by construction; a vendor's installer uses them the same way.

/// The serial console the ready marker is written to.
pub const SERIAL_CONSOLE: &str = "/dev/ttyS0";

/// The `final_message` used when the marker itself cannot be (see
/// [`final_message`]).
pub const FALLBACK_FINAL_MESSAGE: &str = "nasvisor: cloud-init finished";

/// 64-bit FNV-1a of `bytes`.
fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The instance id of an install: `iid-nasvisor-` and 16 hex digits of the
/// FNV-1a hash of the VM name and the host name. Deterministic, so planning
/// the same install twice gives the same seed; different VMs or host names
/// give different ids (a new id is what makes cloud-init treat the first boot
/// as a new instance and apply the users and keys).
pub fn instance_id(vm_name: &str, hostname: &str) -> String {
    let mut key = Vec::with_capacity(vm_name.len() + hostname.len() + 1);
    key.extend_from_slice(vm_name.as_bytes());
    key.push(0);
    key.extend_from_slice(hostname.as_bytes());
    format!("iid-nasvisor-{:016x}", fnv1a64(&key))
}

/// The first label of a host name (`web01` for `web01.example.com`).
pub fn short_hostname(hostname: &str) -> &str {
    hostname.split('.').next().unwrap_or(hostname)
}

/// The one `runcmd` entry a seed may carry: it prints `marker` on
/// [`SERIAL_CONSOLE`]. The marker is a positional argument of a fixed
/// script, never parsed by the shell.
pub fn ready_command(marker: &str) -> [String; 5] {
    [
        "sh".into(),
        "-c".into(),
        format!("printf '%s\\n' \"$1\" > {SERIAL_CONSOLE} || true"),
        "nasvisor-ready".into(),
        marker.into(),
    ]
}

/// The text of `final_message` for `marker`: the marker itself, unless
/// cloud-init's template substitution could alter it (`$` is substituted,
/// and an unknown `$name` even fails the module; a `## template` header
/// switches to Jinja). In that case [`FALLBACK_FINAL_MESSAGE`], and only the
/// [`ready_command`] prints the marker.
pub fn final_message(marker: &str) -> String {
    if marker.contains('$') || marker.trim_start().starts_with("##") {
        FALLBACK_FINAL_MESSAGE.to_string()
    } else {
        marker.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_is_deterministic_and_distinct() {
        let a = instance_id("vm1", "web01");
        assert_eq!(a, instance_id("vm1", "web01"));
        assert!(a.starts_with("iid-nasvisor-") && a.len() == "iid-nasvisor-".len() + 16);
        assert_ne!(a, instance_id("vm2", "web01"));
        assert_ne!(a, instance_id("vm1", "web02"));
        // The separator keeps ("ab", "c") and ("a", "bc") apart.
        assert_ne!(instance_id("ab", "c"), instance_id("a", "bc"));
        // Known FNV-1a test vector.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn final_message_avoids_template_syntax() {
        assert_eq!(final_message("NASVISOR-READY"), "NASVISOR-READY");
        assert_eq!(final_message("ready $UPTIME"), FALLBACK_FINAL_MESSAGE);
        assert_eq!(final_message("## template: jinja"), FALLBACK_FINAL_MESSAGE);
    }

    #[test]
    fn short_hostname_is_the_first_label() {
        assert_eq!(short_hostname("web01.example.com"), "web01");
        assert_eq!(short_hostname("web01"), "web01");
    }
}
