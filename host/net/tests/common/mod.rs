//! Test fixtures: network namespaces made (and always removed) by the tests,
//! so no test touches the host's interfaces. The tests use `ip` only to set
//! up and inspect their own namespaces; the library under test uses netlink.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nasvisor_net::netns::Netns;
use nasvisor_net::Net;

static COUNTER: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Prefix of every namespace these tests make; the next field is the pid of
/// the test process, in hex.
const PREFIX: &str = "nvtest-net-";

/// Fails the test at once, with the reason, when not run as root.
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "these tests create network namespaces and must run as root"
    );
}

/// Deletes namespaces left by test processes that were killed before their
/// guards ran (the pid in the name no longer exists).
fn sweep_stale() {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|p| u32::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A network namespace `nvtest-net-<pid>-<unique>-<tag>`, deleted on drop (which
/// deletes every bridge, tap and veth end inside it), even when the test
/// panics.
pub struct TestNs {
    name: String,
}

impl TestNs {
    pub fn new(tag: &str) -> TestNs {
        require_root();
        SWEEP.call_once(sweep_stale);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let name = format!(
            "{PREFIX}{:x}-{:x}{:04x}-{tag}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos & 0xffff
        );
        run(&["ip", "netns", "add", &name]);
        let ns = TestNs { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A handle on this namespace for the library under test.
    pub fn net(&self) -> Net {
        Net::netns(&self.name).expect("open the test namespace")
    }

    /// `ip -n <ns> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let mut argv = vec!["ip", "-n", &self.name];
        argv.extend_from_slice(args);
        run(&argv);
    }

    /// `ip -n <ns> ARGS`, whatever its outcome.
    pub fn try_ip(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["-n", &self.name])
            .args(args)
            .output()
            .expect("run ip")
    }

    /// `ip -j -d link show dev DEV` parsed, or `None` if there is no such
    /// link.
    pub fn link(&self, dev: &str) -> Option<serde_json::Value> {
        let out = self.try_ip(&["-j", "-d", "link", "show", "dev", dev]);
        if !out.status.success() {
            return None;
        }
        let mut v: Vec<serde_json::Value> =
            serde_json::from_slice(&out.stdout).expect("ip -j output is JSON");
        v.pop()
    }

    /// Names of every link in the namespace.
    pub fn link_names(&self) -> Vec<String> {
        let out = self.try_ip(&["-j", "link", "show"]);
        assert!(out.status.success());
        let v: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        v.iter()
            .map(|l| l["ifname"].as_str().unwrap().to_string())
            .collect()
    }

    /// The bridge `dev` is attached to, if any.
    pub fn master_of(&self, dev: &str) -> Option<String> {
        self.link(dev)
            .and_then(|l| l["master"].as_str().map(str::to_string))
    }

    /// `ip netns exec <ns> ARGV`.
    pub fn exec(&self, argv: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(argv)
            .output()
            .expect("run ip netns exec")
    }

    /// A UDP socket bound to `addr` inside this namespace.
    pub fn udp(&self, addr: &str) -> UdpSocket {
        let addr = addr.to_string();
        Netns::open(&self.name)
            .unwrap()
            .run(move || UdpSocket::bind(addr))
            .unwrap()
            .expect("bind UDP socket in the test namespace")
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let out = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!(
                    "warning: cannot delete netns {}: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

/// Runs a command that must succeed.
pub fn run(argv: &[&str]) {
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
    assert!(
        out.status.success(),
        "{argv:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Whether the host namespace has a link called `name` (it never should:
/// the tests work inside their own namespaces).
pub fn host_has_link(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", "dev", name])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}

/// Sends a datagram from `from` to `to_addr`, where `to` must receive it
/// and echo it back. True when the round trip completes within `timeout`.
pub fn udp_round_trip(from: &UdpSocket, to: &UdpSocket, to_addr: &str, timeout: Duration) -> bool {
    to.set_read_timeout(Some(timeout)).unwrap();
    from.set_read_timeout(Some(timeout)).unwrap();
    let payload = b"nasvisor-net test";
    if from.send_to(payload, to_addr).is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    let Ok((n, peer)) = to.recv_from(&mut buf) else {
        return false;
    };
    if &buf[..n] != payload || to.send_to(&buf[..n], peer).is_err() {
        return false;
    }
    matches!(from.recv_from(&mut buf), Ok((m, _)) if &buf[..m] == payload)
}

/// Whether a `ping` binary is installed.
pub fn have_ping() -> bool {
    Command::new("ping")
        .arg("-V")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false)
}
