//! Fixtures of the daemon tests: a real `nasvisord` process (TCG, its own
//! data directory, the signed plugins of this checkout, the bundled guest
//! image) whose bridges, taps and QEMUs live in a network namespace the test
//! created; the real `nasvisor` CLI to drive it. Everything started is
//! stopped by its own pid, and the namespace is deleted, even when a test
//! fails.
//!
//! [`cluster`]: several daemons, each in a namespace of its own on a test
//! switch, for the cluster tests.

#![allow(dead_code)]

pub mod cluster;

use nasvisor_faults::HungMount;
use nasvisor_plugin_host::testkit::{plugin_dir, workspace_root};
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const NS_PREFIX: &str = "nvtest-d-";

/// A network namespace made by the test, deleted on drop.
pub struct TestNs {
    pub name: String,
}

impl TestNs {
    pub fn new() -> TestNs {
        sweep_stale_namespaces();
        TestNs::named(format!(
            "{NS_PREFIX}{:x}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ))
    }

    /// A namespace of that name (unique, and starting with a prefix whose
    /// stale namespaces the caller sweeps).
    pub fn named(name: String) -> TestNs {
        let o = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("ip runs (iproute2 is installed by scripts/setup.sh)");
        assert!(
            o.status.success(),
            "ip netns add {name}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        TestNs { name }
    }
}

impl Drop for TestNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Deletes namespaces of test processes that died before their guards ran.
fn sweep_stale_namespaces() {
    sweep_stale_namespaces_of(NS_PREFIX);
}

/// Deletes the namespaces named `<prefix><pid in hex>-...` whose test
/// process is gone.
pub fn sweep_stale_namespaces_of(prefix: &str) {
    let Ok(entries) = std::fs::read_dir("/var/run/netns") else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|r| r.split('-').next())
            .and_then(|p| u32::from_str_radix(p, 16).ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A running `nasvisord`.
pub struct Daemon {
    pub dir: tempfile::TempDir,
    child: Option<Child>,
    pub endpoint: String,
    /// The bootstrap admin token this daemon printed at its first start.
    pub token: String,
    /// The cluster's admin token, once this host joined a cluster (its own
    /// first-start token went with its single-host store).
    pub cluster_token: std::sync::Mutex<Option<String>>,
    pub fingerprint: String,
    pub ns: TestNs,
    starts: u32,
    /// `Some(ns)`: the daemon and the CLI run inside `ns` (`ip netns exec`).
    netns_exec: Option<String>,
    /// Its `--log` filter (`info` unless a test asks for more).
    pub log: String,
    /// What it printed on stdout after its banner (a restart into a
    /// service release prints a new one).
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    /// How many of `lines` were read by [`Daemon::wait_restart`].
    lines_read: usize,
    /// More environment of the daemon's process.
    env: Vec<(String, String)>,
}

fn bin(name: &str) -> PathBuf {
    let p = Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name(name);
    assert!(
        p.is_file(),
        "{} is missing: build it with `cargo build -p nasvisor-cli` (the same profile as the tests)",
        p.display()
    );
    p
}

/// How a daemon is set up; [`Daemon::start`] is [`DaemonSetup::single_host`].
pub struct DaemonSetup {
    /// `[host] name`.
    pub host_name: String,
    /// The namespace of the daemon's bridges, taps and QEMUs, deleted with
    /// the daemon (after it and its QEMUs were killed).
    pub ns: TestNs,
    /// true: the daemon and the CLI run inside `ns` (`ip netns exec`), and
    /// the configuration has no `[network] netns`; false: they run in the
    /// test's namespace, and `[network] netns` names `ns`.
    pub inside_ns: bool,
    /// `[cluster] address`.
    pub cluster_address: String,
    /// More `key = value` lines of `[cluster]`.
    pub cluster_extra: Vec<String>,
    /// More lines after `[api]`'s (its keys, then tables such as
    /// `[api.limits]`).
    pub api_extra: Vec<String>,
    /// `key = value` lines of `[plugins.runtime]`.
    pub plugins_runtime: Vec<String>,
    /// More environment of the daemon's process.
    pub env: Vec<(String, String)>,
    /// More top-level `key = value` lines of the configuration (after
    /// `data-dir`).
    pub top_extra: Vec<String>,
}

impl DaemonSetup {
    /// The single-host daemon of the daemon tests: host `nas1`, a fresh
    /// namespace for its network objects, a free loopback cluster port.
    pub fn single_host() -> DaemonSetup {
        let ns = TestNs::new();
        DaemonSetup {
            host_name: "nas1".into(),
            ns,
            inside_ns: false,
            cluster_address: format!("127.0.0.1:{}", free_port()),
            cluster_extra: Vec::new(),
            api_extra: Vec::new(),
            plugins_runtime: Vec::new(),
            env: Vec::new(),
            top_extra: Vec::new(),
        }
    }

    /// The daemon's configuration file.
    pub fn config(&self, data_dir: &Path) -> String {
        let guest = workspace_root().join("target/guest");
        let network = if self.inside_ns {
            String::new()
        } else {
            format!("[network]\nnetns = \"{}\"\n", self.ns.name)
        };
        // The lease in the test's own directory (the daemon's default is
        // under /run/nasvisor).
        let mut cluster = format!(
            "[cluster]\naddress = \"{}\"\nha-lease-dir = \"{}\"\n",
            self.cluster_address,
            data_dir.join("ha").display()
        );
        for line in &self.cluster_extra {
            cluster.push_str(line);
            cluster.push('\n');
        }
        let api: String = self.api_extra.iter().map(|l| format!("{l}\n")).collect();
        let mut runtime = String::new();
        if !self.plugins_runtime.is_empty() {
            runtime.push_str("[plugins.runtime]\n");
            for line in &self.plugins_runtime {
                runtime.push_str(line);
                runtime.push('\n');
            }
        }
        let top: String = self.top_extra.iter().map(|l| format!("{l}\n")).collect();
        format!(
            r#"data-dir = "{data}"
{top}[host]
name = "{name}"
[api]
listen = "127.0.0.1:0"
{api}[vm]
accel = "tcg"
{network}{cluster}[[images.bundled]]
name = "nasvisor-mini"
path = "{guest}/nasvisor-mini.qcow2"
metadata = "{guest}/guest-image.json"
[plugins]
dir = "{plugins}"
trusted-keys-dir = "{keys}"
{runtime}"#,
            data = data_dir.display(),
            name = self.host_name,
            guest = guest.display(),
            plugins = plugin_dir().display(),
            keys = workspace_root().join("target/keys").display(),
        )
    }
}

impl Daemon {
    /// Starts a daemon on a fresh data directory.
    pub fn start() -> Daemon {
        Daemon::start_with(DaemonSetup::single_host())
    }

    /// Starts a single-host daemon that logs at `filter` (`--log`).
    pub fn start_logging(filter: &str) -> Daemon {
        Daemon::start_with_log(DaemonSetup::single_host(), filter)
    }

    /// Starts a daemon set up so, on a fresh data directory.
    pub fn start_with(setup: DaemonSetup) -> Daemon {
        Daemon::start_with_log(setup, "info")
    }

    fn start_with_log(setup: DaemonSetup, filter: &str) -> Daemon {
        let guest = workspace_root().join("target/guest");
        assert!(
            guest.join("nasvisor-mini.qcow2").is_file(),
            "target/guest/nasvisor-mini.qcow2 is missing: run scripts/setup.sh (it builds the guest image)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = setup.config(&dir.path().join("data"));
        std::fs::write(dir.path().join("nasvisord.toml"), cfg).unwrap();
        let netns_exec = setup.inside_ns.then(|| setup.ns.name.clone());
        let mut d = Daemon {
            dir,
            child: None,
            endpoint: String::new(),
            token: String::new(),
            cluster_token: Default::default(),
            fingerprint: String::new(),
            ns: setup.ns,
            starts: 0,
            netns_exec,
            log: filter.to_string(),
            lines: Default::default(),
            lines_read: 0,
            env: setup.env,
        };
        d.spawn();
        d
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// (Re)starts the process and waits for its banner.
    pub fn spawn(&mut self) {
        self.starts += 1;
        self.endpoint.clear();
        self.fingerprint.clear();
        let log = self
            .dir
            .path()
            .join(format!("nasvisord-{}.log", self.starts));
        let mut child = self
            .command(Path::new(env!("CARGO_BIN_EXE_nasvisord")))
            .arg("--config")
            .arg(self.dir.path().join("nasvisord.toml"))
            .args(["--log", &self.log])
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("nasvisord starts");
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = rx.recv_timeout(left).unwrap_or_else(|_| {
                panic!(
                    "nasvisord printed no banner; its log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
            if let Some(a) = line.strip_prefix("nasvisor admin endpoint: ") {
                self.endpoint = a.trim().to_string();
            } else if let Some(f) = line.strip_prefix("TLS certificate SHA-256 fingerprint: ") {
                self.fingerprint = f.trim().to_string();
            } else if let Some(t) = line.strip_prefix("admin token (shown once, store it now): ") {
                self.token = t.trim().to_string();
            }
            if !self.endpoint.is_empty() && !self.fingerprint.is_empty() && !self.token.is_empty() {
                // The banner is printed once the endpoint is bound.
                break;
            }
        }
        // Keep draining stdout so the daemon never blocks on it; what comes
        // is kept (the banner of a restart into a service release).
        self.lines = Default::default();
        self.lines_read = 0;
        let lines = self.lines.clone();
        std::thread::spawn(move || {
            while let Ok(l) = rx.recv() {
                lines.lock().unwrap().push(l);
            }
        });
    }

    /// Whether the daemon this fixture started has exited (a simulated
    /// reboot stops it; the test starts it again, as systemd would).
    pub fn exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Whether the daemon started again in place since the last look (a
    /// new banner): its endpoint is then the new one. Never waits.
    pub fn restarted(&mut self) -> bool {
        let lines = self.lines.lock().unwrap();
        let fresh = &lines[self.lines_read.min(lines.len())..];
        let Some(i) = fresh
            .iter()
            .rposition(|l| l.starts_with("nasvisor admin endpoint: "))
        else {
            return false;
        };
        self.endpoint = fresh[i]["nasvisor admin endpoint: ".len()..]
            .trim()
            .to_string();
        self.lines_read += i + 1;
        true
    }

    /// Waits for the banner of the daemon's next start in place (a restart
    /// into a service release, or the roll-back's): its new endpoint. The
    /// process may be another one (see [`Daemon::running_pid`]).
    pub fn wait_restart(&mut self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let lines = self.lines.lock().unwrap();
                let fresh = &lines[self.lines_read.min(lines.len())..];
                if let Some(i) = fresh
                    .iter()
                    .position(|l| l.starts_with("nasvisor admin endpoint: "))
                {
                    let a = &fresh[i];
                    self.endpoint = a["nasvisor admin endpoint: ".len()..].trim().to_string();
                    self.lines_read += i + 1;
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "nasvisord printed no new banner; its log:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The pid in the daemon's pid file, when it is a live nasvisord of
    /// this test (its command line names this test's configuration).
    pub fn running_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.data_dir().join("nasvisord.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let config = self.dir.path().join("nasvisord.toml");
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(config.to_string_lossy().as_ref()))
            .unwrap_or(false);
        (ours && alive(pid)).then_some(pid)
    }

    /// SIGKILL to the processes of this test's daemon that are not its
    /// child: the daemon a service release's roll-back restarted (from
    /// the pid file), and the watchdogs of service releases (their pids
    /// from /proc, each checked to name this test's configuration).
    pub fn kill_service_processes(&self) {
        let config = self.dir.path().join("nasvisord.toml");
        let config = config.to_string_lossy();
        let mut pids: Vec<i32> = self.running_pid().into_iter().collect();
        if let Ok(rd) = std::fs::read_dir("/proc") {
            for e in rd.flatten() {
                let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                    continue;
                };
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                let cmd = String::from_utf8_lossy(&cmd);
                if cmd.contains(config.as_ref()) && cmd.contains("service-watch") {
                    pids.push(pid);
                }
            }
        }
        for pid in pids {
            if alive(pid) && pid != std::process::id() as i32 {
                // SAFETY: kill(2) with a pid checked just before to be a
                // live process whose command line names this test's own
                // configuration file.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }

    /// A command that runs `program` where the daemon runs (inside its
    /// namespace when it runs there; `ip netns exec` execs `program`, so the
    /// child's pid is the program's).
    pub fn command(&self, program: &Path) -> Command {
        match &self.netns_exec {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// The log (stderr) of the latest start.
    pub fn log_path(&self) -> PathBuf {
        self.dir
            .path()
            .join(format!("nasvisord-{}.log", self.starts))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM and wait.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on the pid of our own child, which we have not
            // reaped yet, so the pid cannot have been reused.
            unsafe {
                libc::kill(c.id() as i32, libc::SIGTERM);
            }
            let _ = c.wait();
        }
    }

    /// Runs the CLI against this daemon.
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_with_token(&self.admin_token(), args)
    }

    /// The admin token that works here: the cluster's once this host
    /// joined one, else its own.
    pub fn admin_token(&self) -> String {
        self.cluster_token
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| self.token.clone())
    }

    pub fn cli_with_token(&self, token: &str, args: &[&str]) -> Output {
        self.cli_command(token, args)
            .output()
            .expect("the nasvisor CLI runs")
    }

    /// The command of `nasvisor <args>` against this daemon, not started.
    pub fn cli_command(&self, token: &str, args: &[&str]) -> Command {
        let mut c = self.command(&bin("nasvisor"));
        c.args(args)
            .env("NASVISOR_ENDPOINT", &self.endpoint)
            .env("NASVISOR_TOKEN", token)
            .env("NASVISOR_FINGERPRINT", &self.fingerprint)
            .env_remove("NASVISOR_CA_CERT")
            .env_remove("NASVISOR_TOKEN_FILE");
        c
    }

    /// Runs `nasvisor --json <args>`, which must succeed; its JSON answer.
    pub fn json(&self, args: &[&str]) -> Value {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self.cli(&a);
        assert!(
            o.status.success(),
            "nasvisor {args:?} failed: {}{}",
            String::from_utf8_lossy(&o.stderr),
            String::from_utf8_lossy(&o.stdout)
        );
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Value::Null;
        }
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
            panic!(
                "nasvisor {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    /// Creates a stopped VM with 1 vCPU, 128 MiB and one new 64 MiB disk in
    /// pool `default`; `extra` are more `vm create` options.
    pub fn create_blank_vm(&self, name: &str, extra: &[&str]) -> Value {
        let a = blank_vm_args(name, extra);
        self.json(&a)
    }

    /// Runs the CLI, which must fail; its error output.
    pub fn fails(&self, args: &[&str]) -> String {
        let o = self.cli(args);
        assert!(
            !o.status.success(),
            "nasvisor {args:?} should have failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    /// Waits until `vm show <vm>` satisfies `f`.
    pub fn wait_vm(&self, vm: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.json(&["vm", "show", vm]);
            if f(&v) {
                return v;
            }
            assert!(Instant::now() < deadline, "VM {vm} never got there: {v:#}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for the VM's console to contain `needle`; the console text.
    pub fn wait_console(&self, vm: &str, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let o = self.cli(&["vm", "console", vm, "--tail", "1048576"]);
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never showed on VM {vm}'s console:\n{text}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// The pids of the QEMUs this daemon started (from its run directory).
    pub fn qemu_pids(&self) -> Vec<i32> {
        // A replica server (`<id>.replica.pid`) is no copy of the VM.
        self.run_pids(|name| !name.ends_with(".replica.pid"))
    }

    /// The pids in the pid files of this daemon's run directory whose
    /// names `keep` accepts.
    fn run_pids(&self, keep: impl Fn(&str) -> bool) -> Vec<i32> {
        let run = self.data_dir().join("run");
        let Ok(rd) = std::fs::read_dir(run) else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter(|e| keep(&e.file_name().to_string_lossy()))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|s| s.trim().parse().ok())
            .collect()
    }
}

/// `vm create NAME` of a stopped VM with 1 vCPU, 128 MiB and one new
/// 64 MiB disk in pool `default`, then `extra`: the CLI arguments.
pub fn blank_vm_args<'a>(name: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec![
        "vm",
        "create",
        name,
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--disk",
        "default:64",
    ];
    a.extend_from_slice(extra);
    a
}

/// The entry of `world` in a `plugin list` answer.
pub fn plugin_entry(list: &Value, world: &str) -> Option<Value> {
    list.as_array()?
        .iter()
        .find(|p| p["world"] == world)
        .cloned()
}

/// The state of `world`'s plugin on `host` in a `plugin list` answer.
pub fn plugin_on_host(list: &Value, world: &str, host: &str) -> Option<Value> {
    plugin_entry(list, world)?["hosts"]
        .as_array()?
        .iter()
        .find(|h| h["host"] == host)
        .cloned()
}

/// The events of `kind` in an `event list` answer, oldest first.
pub fn events_of_kind(list: &Value, kind: &str) -> Vec<Value> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["kind"] == kind)
        .cloned()
        .collect()
}

/// Runs `c` with `stdin` typed in; its output.
pub fn typed(mut c: Command, stdin: &str) -> Output {
    use std::io::Write;
    c.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// The numbers of the guest counter's `COUNT <n>` lines (the image's
/// `/lib/nasvisor/counter`), in console order.
pub fn counts(console: &str) -> Vec<u64> {
    console
        .lines()
        .filter_map(|l| {
            let l = l.trim_end_matches('\r');
            let at = l.rfind("COUNT ")?;
            l[at + "COUNT ".len()..].trim().parse().ok()
        })
        .collect()
}

/// A loopback TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next())
                .is_some_and(|st| st != "Z")
        })
        .unwrap_or(false)
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        self.kill_service_processes();
        self.kill_qemus();
        self.kill_replica_servers();
        self.kill_watchdog();
    }
}

impl Daemon {
    /// The HA lease the daemon's watchdog guards.
    pub fn lease_path(&self) -> PathBuf {
        self.data_dir().join("ha").join("lease.json")
    }

    /// The pid of this daemon's watchdog, when one runs.
    pub fn watchdog_pid(&self) -> Option<i32> {
        let lease = self.lease_path();
        let pid: i32 = std::fs::read_to_string(lease.with_extension("json.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|c| String::from_utf8_lossy(&c).contains(lease.to_string_lossy().as_ref()))
            .unwrap_or(false);
        (ours && alive(pid)).then_some(pid)
    }

    /// SIGKILL to this daemon's watchdog (it outlives the daemon by
    /// design), by its pid.
    pub fn kill_watchdog(&self) {
        if let Some(pid) = self.watchdog_pid() {
            // SAFETY: kill(2) with the pid of the pid file of this test's
            // own lease, checked just before to be its live watchdog.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
            }
        }
    }

    /// SIGKILL to the QEMUs of this daemon's run directory (they outlive the
    /// daemon by design), by their pids.
    pub fn kill_qemus(&self) {
        self.kill_run_pids(self.qemu_pids());
    }

    /// SIGKILL to the replica servers (`qemu-storage-daemon`) of this
    /// daemon's run directory, which outlive it too.
    pub fn kill_replica_servers(&self) {
        self.kill_run_pids(self.run_pids(|name| name.ends_with(".replica.pid")));
    }

    fn kill_run_pids(&self, pids: Vec<i32>) {
        let run = self.data_dir().join("run");
        let run = run.to_string_lossy();
        for pid in pids {
            // Only a live QEMU or replica server of this daemon (its
            // command line names the run dir).
            let ours = std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(run.as_ref()))
                .unwrap_or(false);
            if ours && alive(pid) {
                // SAFETY: kill(2) with a pid read from this test's own run
                // directory, checked just before to be a live process of it.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
    }
}

/// The `[firmware]` lines of an appliance laid out in `p` (the firmware
/// tests): slot files `slot-a.img` and `slot-b.img`, the ESP `esp/`, the
/// command line `cmdline`, the EFI variables `efivars/` (none: not a
/// UEFI boot), the trusted keys `trusted/`, product `acme-nas`, board
/// `acme-nas4`.
pub fn firmware_lines(p: &Path) -> Vec<String> {
    let at = |name: &str| p.join(name).display().to_string();
    vec![
        "[firmware]".into(),
        "enabled = true".into(),
        format!("esp = \"{}\"", at("esp")),
        format!("slot-a = \"{}\"", at("slot-a.img")),
        format!("slot-b = \"{}\"", at("slot-b.img")),
        format!("cmdline = \"{}\"", at("cmdline")),
        format!("efivars = \"{}\"", at("efivars")),
        format!("trusted-keys-dir = \"{}\"", at("trusted")),
        "product = \"acme-nas\"".into(),
        "board = \"acme-nas4\"".into(),
    ]
}

/// A directory put on a FUSE pass-through (`bindfs`, see
/// [`HungMount`]) whose daemon the test can stop: every file under it then
/// hangs as on a dead disk, while the host and its processes stay alive.
/// Drop lets it go on and unmounts it.
pub struct HungDir {
    mount: HungMount,
    _backing: tempfile::TempDir,
}

impl HungDir {
    /// Puts `dir` on a bindfs of a new directory, in the mount namespace of
    /// process `ns_pid` (`None`: this process's). With `keep`, what `dir`
    /// holds is moved onto the new directory first, so that it is found
    /// there (nothing may have it open); without, it is hidden.
    pub fn mount(ns_pid: Option<u32>, dir: PathBuf, keep: bool) -> HungDir {
        let backing = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(&dir).expect("the directory");
        let kept = if keep {
            std::fs::read_dir(&dir).expect("the directory").collect()
        } else {
            Vec::new()
        };
        for e in kept {
            let e = e.expect("an entry");
            std::fs::rename(e.path(), backing.path().join(e.file_name()))
                .expect("moved onto the backing directory");
        }
        HungDir {
            mount: HungMount::mount(ns_pid, backing.path(), &dir),
            _backing: backing,
        }
    }

    /// Every access under the directory hangs from now on.
    pub fn hang(&self) {
        self.mount.hang();
    }

    /// Accesses are answered again (those that hung go on).
    pub fn answer(&self) {
        self.mount.answer();
    }
}
