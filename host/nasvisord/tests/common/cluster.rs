//! A cluster of real daemons for the cluster tests: every host is a
//! `nasvisord` in a network namespace of its own (`<base>-h<i>`), whose
//! `eth0` (10.213.<k>.<i>/24) is a veth to a bridge `br0` in a "switch"
//! namespace (`<base>-sw`). The daemon, its bridges, taps and QEMUs, and the
//! CLI that drives it all run inside the host's namespace. `cut(i)` downs
//! host i's switch port, `heal(i)` brings it back.
//!
//! Nothing here touches the test's own network namespace: each veth pair is
//! created inside a host namespace with its peer in the switch namespace. On
//! drop (also when a test panics) every daemon and the QEMUs of its run
//! directory are killed by pid, then the namespaces are deleted.

use super::{alive, sweep_stale_namespaces_of, Daemon, DaemonSetup, TestNs};
use serde_json::Value;
use std::io::Read;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const NS_PREFIX: &str = "nvtest-c-";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// The port of every host's cluster endpoint.
pub const CLUSTER_PORT: u16 = 8444;

/// How long a CLI call may take before the fixture gives up on it (a host
/// cut off from its peers may hold a request until its own timeout).
const CLI_TIMEOUT: Duration = Duration::from_secs(60);

/// `n` hosts `nas1`..`nas<n>`, each a daemon in its own namespace.
pub struct Cluster {
    /// Host i is `hosts[i - 1]`; dropped (daemons and QEMUs killed, host
    /// namespaces deleted) before the switch.
    hosts: Vec<Daemon>,
    cut: Vec<bool>,
    /// The third octet of the hosts' addresses (1..=250).
    pub k: u8,
    /// The namespace name prefix of this cluster.
    pub base: String,
    switch: TestNs,
}

/// Runs `ip <args>`, which must succeed.
fn ip(args: &[&str]) {
    let o = Command::new("ip")
        .args(args)
        .output()
        .expect("ip runs (iproute2 is installed by scripts/setup.sh)");
    assert!(
        o.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&o.stderr)
    );
}

impl Cluster {
    /// Builds the network and starts `n` daemons (not clustered yet: see
    /// [`Cluster::form`]).
    pub fn start(n: usize) -> Cluster {
        Self::start_with(n, &[])
    }

    /// Like [`Self::start`], with more `[cluster]` lines in every host's
    /// configuration.
    pub fn start_with(n: usize, cluster_lines: &[&str]) -> Cluster {
        Self::start_per_host(n, |_| cluster_lines.iter().map(|l| l.to_string()).collect())
    }

    /// `n` hosts with the daemon's default cluster timings (not the
    /// suite's short ones), formed, with a pool `nfs` every host reaches
    /// (kept while the returned directory lives): the benchmarks' setting.
    pub fn with_default_timings(n: usize) -> (Cluster, tempfile::TempDir) {
        Self::with_shared_pool(
            n,
            &[
                "heartbeat-interval-ms = 500",
                "offline-after-s = 3",
                "quorum-stop-delay-s = 60",
            ],
        )
    }

    /// `n` hosts with `cluster_lines`, formed, with a pool `nfs` every host
    /// reaches (kept while the returned directory lives).
    pub fn with_shared_pool(n: usize, cluster_lines: &[&str]) -> (Cluster, tempfile::TempDir) {
        let c = Cluster::start_with(n, cluster_lines);
        c.form();
        let shared = tempfile::tempdir().expect("tempdir");
        let dir = shared.path().join("pool");
        c.host(1)
            .json(&["pool", "create", "nfs", dir.to_str().unwrap(), "--shared"]);
        (c, shared)
    }

    /// Like [`Self::start`], with more `[cluster]` lines for host i.
    pub fn start_per_host(n: usize, cluster_lines: impl Fn(usize) -> Vec<String>) -> Cluster {
        Self::start_custom(n, cluster_lines, |_| Vec::new())
    }

    /// Like [`Self::start_per_host`], with more lines after host i's
    /// `[api]` section (whole sections, e.g. `[firmware]`).
    pub fn start_custom(
        n: usize,
        cluster_lines: impl Fn(usize) -> Vec<String>,
        api_lines: impl Fn(usize) -> Vec<String>,
    ) -> Cluster {
        assert!((1..=250).contains(&n), "1 to 250 hosts");
        sweep_stale_namespaces_of(NS_PREFIX);
        let pid = std::process::id();
        let seq = COUNTER.fetch_add(1, Ordering::SeqCst);
        let k = (pid.wrapping_mul(7).wrapping_add(seq) % 250 + 1) as u8;
        let base = format!("{NS_PREFIX}{pid:x}-{seq}");
        let switch = TestNs::named(format!("{base}-sw"));
        let sw = switch.name.clone();
        ip(&["-n", &sw, "link", "set", "lo", "up"]);
        ip(&["-n", &sw, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", &sw, "link", "set", "br0", "up"]);
        let mut c = Cluster {
            hosts: Vec::new(),
            cut: vec![false; n],
            k,
            base,
            switch,
        };
        for i in 1..=n {
            // Dropped (deleted) with its daemon, or right here on a panic.
            let ns = TestNs::named(format!("{}-h{i}", c.base));
            let port = format!("h{i}");
            ip(&[
                "-n", &ns.name, "link", "add", "eth0", "type", "veth", "peer", "name", &port,
                "netns", &sw,
            ]);
            ip(&["-n", &sw, "link", "set", &port, "master", "br0"]);
            ip(&["-n", &sw, "link", "set", &port, "up"]);
            ip(&[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{}/24", c.ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", &ns.name, "link", "set", "eth0", "up"]);
            ip(&["-n", &ns.name, "link", "set", "lo", "up"]);
            let d = Daemon::start_with(DaemonSetup {
                host_name: c.name(i),
                ns,
                inside_ns: true,
                cluster_address: c.address(i),
                cluster_extra: test_timing(cluster_lines(i)),
                api_extra: api_lines(i),
                plugins_runtime: Vec::new(),
                env: Vec::new(),
                top_extra: Vec::new(),
            });
            c.hosts.push(d);
        }
        c
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    /// Host i (1-based).
    pub fn host(&self, i: usize) -> &Daemon {
        assert!((1..=self.len()).contains(&i), "no host {i}");
        &self.hosts[i - 1]
    }

    /// Host i (1-based), to kill, stop or restart it.
    pub fn host_mut(&mut self, i: usize) -> &mut Daemon {
        assert!((1..=self.len()).contains(&i), "no host {i}");
        &mut self.hosts[i - 1]
    }

    /// Host i's name and id: `nas<i>`.
    pub fn name(&self, i: usize) -> String {
        format!("nas{i}")
    }

    /// Host i's address on the test switch.
    pub fn ip(&self, i: usize) -> String {
        format!("10.213.{}.{i}", self.k)
    }

    /// Host i's cluster endpoint, `ip:port`.
    pub fn address(&self, i: usize) -> String {
        format!("{}:{CLUSTER_PORT}", self.ip(i))
    }

    /// The network namespace of host i.
    pub fn netns(&self, i: usize) -> &str {
        &self.host(i).ns.name
    }

    /// The host whose cluster endpoint is `addr`.
    pub fn index_of_address(&self, addr: &str) -> Option<usize> {
        (1..=self.len()).find(|&i| self.address(i) == addr)
    }

    /// The host named `name` (`nas<i>`).
    pub fn index_of_name(&self, name: &str) -> Option<usize> {
        (1..=self.len()).find(|&i| self.name(i) == name)
    }

    /// Whether host i's daemon runs and its link is up.
    pub fn reachable(&self, i: usize) -> bool {
        self.host(i).pid() != 0 && !self.cut[i - 1]
    }

    /// Isolates host i: its port on the switch goes down.
    pub fn cut(&mut self, i: usize) {
        self.set_port(i, false);
    }

    /// Reconnects host i.
    pub fn heal(&mut self, i: usize) {
        self.set_port(i, true);
    }

    fn set_port(&mut self, i: usize, up: bool) {
        let state = if up { "up" } else { "down" };
        let port = format!("h{i}");
        ip(&["-n", &self.switch.name, "link", "set", &port, state]);
        self.cut[i - 1] = !up;
    }

    /// Makes the hosts one cluster: `cluster create` on host 1, then every
    /// other host joins through host 1 with a fresh token. Returns once
    /// `host list` on host 1 shows every host online and every host's
    /// `cluster status` lists all members and a leader.
    pub fn form(&self) {
        self.form_with(self.len(), &[]);
    }

    /// Like [`Self::form`], with hosts 1..=`members` only and `create`
    /// as more `cluster create` options (e.g. `--max-members 3`).
    pub fn form_with(&self, members: usize, create: &[&str]) {
        let mut args = vec!["cluster", "create"];
        args.extend_from_slice(create);
        let c = self.host(1).json(&args);
        assert_eq!(c["clustered"], true, "cluster create on host 1: {c:#}");
        for i in 2..=members {
            let t = self.host(1).json(&["cluster", "join-token"]);
            let token = t["token"]
                .as_str()
                .unwrap_or_else(|| panic!("join-token without a token: {t:#}"));
            let o = self
                .host(i)
                .cli_within(
                    &["cluster", "join", &self.address(1), token],
                    Duration::from_secs(120),
                )
                .unwrap_or_else(|| panic!("host {i}: cluster join did not end within 120 s"));
            assert!(
                o.status.success(),
                "host {i}: cluster join {} failed: {}{}",
                self.address(1),
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            );
            // The users and tokens are the cluster's now.
            *self.host(i).cluster_token.lock().unwrap() = Some(self.host(1).admin_token());
        }
        let all: Vec<(usize, bool)> = (1..=members).map(|i| (i, true)).collect();
        self.wait_online(1, &all, Duration::from_secs(60));
        for i in 1..=members {
            eventually(
                Duration::from_secs(30),
                &format!("host {i} seeing all {members} members and a leader"),
                || {
                    let s = self.host(i).try_json(&["cluster", "status"])?;
                    let n = s["members"].as_array().map_or(0, Vec::len);
                    if s["clustered"] == true && n == members && s["leader"].is_u64() {
                        Ok(())
                    } else {
                        Err(format!("{s:#}"))
                    }
                },
            );
        }
    }

    /// Host i's node id in the cluster (`this_node` of its status).
    pub fn node_id(&self, i: usize) -> u64 {
        let s = self.host(i).json(&["cluster", "status"]);
        s["this_node"]
            .as_u64()
            .unwrap_or_else(|| panic!("host {i}: no this_node: {s:#}"))
    }

    /// The leader as host i sees it (from its `cluster status`).
    pub fn leader_seen_by(&self, i: usize) -> Option<usize> {
        let s = self.host(i).try_json(&["cluster", "status"]).ok()?;
        self.leader_in(&s)
    }

    /// The host a `cluster status` answer names as leader.
    pub fn leader_in(&self, status: &Value) -> Option<usize> {
        let id = status["leader"].as_u64()?;
        let m = status["members"]
            .as_array()?
            .iter()
            .find(|m| m["node_id"].as_u64() == Some(id))?;
        self.index_of_address(m["addr"].as_str()?)
    }

    /// The leader, as the first reachable host that knows one tells
    /// (waits up to 20 s for one).
    pub fn leader(&self) -> usize {
        eventually(Duration::from_secs(20), "a known leader", || {
            (1..=self.len())
                .filter(|&i| self.reachable(i))
                .find_map(|i| self.leader_seen_by(i))
                .ok_or_else(|| "no reachable host names a leader".to_string())
        })
    }

    /// `host list` on host `from`, as (name, online) pairs.
    pub fn online(&self, from: usize) -> Result<Vec<(String, bool)>, String> {
        online_in(&self.host(from).try_json(&["host", "list"])?)
    }

    /// Waits until `host list` on host `from` shows each (host, online) of
    /// `want`; the last answer.
    pub fn wait_online(&self, from: usize, want: &[(usize, bool)], timeout: Duration) -> Value {
        let what = format!(
            "host list on host {from} showing {}",
            want.iter()
                .map(|(i, on)| format!(
                    "{} {}",
                    self.name(*i),
                    if *on { "online" } else { "offline" }
                ))
                .collect::<Vec<_>>()
                .join(", ")
        );
        eventually(timeout, &what, || {
            let v = self.host(from).try_json(&["host", "list"])?;
            let seen = online_in(&v)?;
            let ok = want.iter().all(|(i, on)| {
                seen.iter()
                    .any(|(name, online)| *name == self.name(*i) && online == on)
            });
            if ok {
                Ok(v)
            } else {
                Err(format!("{v:#}"))
            }
        })
    }

    /// The live QEMUs of host i's run directory.
    pub fn live_qemus(&self, i: usize) -> Vec<i32> {
        self.host(i)
            .qemu_pids()
            .into_iter()
            .filter(|p| alive(*p))
            .collect()
    }
}

/// Short cluster timings for tests, each unless `lines` set it, then
/// `lines`.
fn test_timing(lines: Vec<String>) -> Vec<String> {
    let key = |l: &str| l.split('=').next().unwrap_or_default().trim().to_string();
    let set: Vec<String> = lines.iter().map(|l| key(l)).collect();
    [
        "heartbeat-interval-ms = 300",
        "offline-after-s = 3",
        "quorum-stop-delay-s = 4",
    ]
    .into_iter()
    .filter(|l| !set.contains(&key(l)))
    .map(str::to_string)
    .chain(lines)
    .collect()
}

/// The (name, online) pairs of a `host list` answer.
pub fn online_in(v: &Value) -> Result<Vec<(String, bool)>, String> {
    let list = v
        .as_array()
        .or_else(|| v["hosts"].as_array())
        .ok_or_else(|| format!("host list is not a list: {v:#}"))?;
    Ok(list
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or("?").to_string(),
                h["online"] == true,
            )
        })
        .collect())
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for (n, d) in self.hosts.iter().enumerate() {
                let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
                let lines: Vec<&str> = log.lines().collect();
                let tail = lines[lines.len().saturating_sub(80)..].join("\n");
                eprintln!(
                    "---- nas{} (netns {}, pid {}), last lines of {}:\n{tail}",
                    n + 1,
                    d.ns.name,
                    d.pid(),
                    d.log_path().display()
                );
            }
        }
        // Each daemon's drop kills it and its QEMUs by pid, then deletes the
        // host's namespace; the switch namespace goes last.
        self.hosts.clear();
    }
}

/// Polls `f` every 200 ms until it answers `Ok` or `timeout` passed; the
/// panic message names `what` and the last `Err`.
pub fn eventually<T>(timeout: Duration, what: &str, f: impl FnMut() -> Result<T, String>) -> T {
    eventually_until(Instant::now() + timeout, what, f)
}

/// [`eventually`] with a deadline.
pub fn eventually_until<T>(
    deadline: Instant,
    what: &str,
    mut f: impl FnMut() -> Result<T, String>,
) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(e) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: not within {:.1} s; last seen:\n{e}",
                    (deadline.max(start) - start).as_secs_f64()
                );
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// CLI helpers that do not panic: for hosts that may be cut off, dead or
/// electing a leader.
impl Daemon {
    /// Runs the CLI, killing it (by its pid) after `timeout`; `None` then.
    pub fn cli_within(&self, args: &[&str], timeout: Duration) -> Option<Output> {
        let mut child = self
            .cli_command(&self.admin_token(), args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the nasvisor CLI runs");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = out.read_to_end(&mut b);
            b
        });
        let err = std::thread::spawn(move || {
            let mut b = Vec::new();
            let _ = err.read_to_end(&mut b);
            b
        });
        let deadline = Instant::now() + timeout;
        let status = loop {
            if let Some(s) = child.try_wait().expect("wait for the CLI") {
                break Some(s);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let stdout = out.join().unwrap_or_default();
        let stderr = err.join().unwrap_or_default();
        status.map(|status| Output {
            status,
            stdout,
            stderr,
        })
    }

    /// Installs `g` from its image and waits until it runs (`vm create
    /// ... --wait`), within `timeout`: its view, or why not.
    pub fn install_guest(&self, g: &Guest, timeout: Duration) -> Result<Value, String> {
        let memory = g.memory_mib.to_string();
        let mut args = vec![
            "vm",
            "create",
            g.name,
            "--image",
            g.image,
            "--vcpus",
            "1",
            "--memory",
            &memory,
            "--hostname",
            g.name,
            "--host",
            g.host,
        ];
        if let Some(pool) = g.pool {
            args.extend(["--pool", pool]);
        }
        if g.ha {
            args.push("--ha");
        }
        args.push("--wait");
        self.try_json_within(&args, timeout)
    }

    /// `nasvisor --json <args>` within `timeout`: its answer, or why not.
    pub fn try_json_within(&self, args: &[&str], timeout: Duration) -> Result<Value, String> {
        let mut a = vec!["--json"];
        a.extend_from_slice(args);
        let o = self
            .cli_within(&a, timeout)
            .ok_or_else(|| format!("nasvisor {args:?}: no answer within {timeout:?}"))?;
        if !o.status.success() {
            return Err(format!(
                "nasvisor {args:?} failed: {}{}",
                String::from_utf8_lossy(&o.stderr),
                String::from_utf8_lossy(&o.stdout)
            ));
        }
        if o.stdout.iter().all(u8::is_ascii_whitespace) {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&o.stdout).map_err(|e| {
            format!(
                "nasvisor {args:?}: not JSON ({e}): {}",
                String::from_utf8_lossy(&o.stdout)
            )
        })
    }

    /// `nasvisor --json <args>` (within 60 s): its answer, or why not.
    pub fn try_json(&self, args: &[&str]) -> Result<Value, String> {
        self.try_json_within(args, CLI_TIMEOUT)
    }

    /// Like `wait_vm`, but a failing `vm show` (not replicated here yet, an
    /// election going on) is waited out too.
    pub fn poll_vm(&self, vm: &str, timeout: Duration, f: impl Fn(&Value) -> bool) -> Value {
        eventually(timeout, &format!("VM {vm} as {}", self.ns.name), || {
            let v = self.try_json(&["vm", "show", vm])?;
            if f(&v) {
                Ok(v)
            } else {
                Err(format!("{v:#}"))
            }
        })
    }
}

/// (total s, downtime ms) from a migrate job's message ("moved to host X in
/// 0.75 s; downtime 67 ms; ...").
pub fn move_figures(job: &Value) -> (f64, u64) {
    let msg = job["message"].as_str().unwrap_or_default();
    let total = msg
        .split(" in ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no total time in {msg:?}"));
    let down = msg
        .split("downtime ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no downtime in {msg:?}"));
    (total, down)
}

/// Host i's console log of VM `id`, both halves.
pub fn console_log(c: &Cluster, i: usize, id: &str) -> String {
    read_console_files(&console_log_files(c, i, id))
}

/// The files of host i's console log of VM `id`: the rotated half, then
/// the current one (QEMU writes them itself, the daemon need not run).
pub fn console_log_files(c: &Cluster, i: usize, id: &str) -> Vec<std::path::PathBuf> {
    let log = c
        .host(i)
        .data_dir()
        .join("run")
        .join(format!("{id}.console.log"));
    let mut rotated = log.clone().into_os_string();
    rotated.push(".1");
    vec![std::path::PathBuf::from(rotated), log]
}

/// The text of console log `files` ([`console_log_files`]).
pub fn read_console_files(files: &[std::path::PathBuf]) -> String {
    files
        .iter()
        .filter_map(|p| std::fs::read(p).ok())
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .collect()
}

/// The numbers after `word` on the lines of `text` that have it.
pub fn numbers_after(text: &str, word: &str) -> Vec<u64> {
    // Whole lines only: the last one may still be coming ("RECORDS-FOUND
    // 21" of "RECORDS-FOUND 2126").
    text.split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .filter_map(|l| {
            let at = l.rfind(word)?;
            l[at + word.len()..].trim().parse().ok()
        })
        .collect()
}

/// Waits until the shell on VM `vm`'s console (sent through host `via`,
/// logged on host `on`) runs what it is sent: a probe whose answer differs
/// from its echo, sent again every 5 s. Only a probe is ever sent twice: a
/// command with an effect, sent again while the guest was slow to answer,
/// would run twice.
pub fn wait_for_shell(
    c: &Cluster,
    via: usize,
    on: usize,
    vm: &str,
    id: &str,
) -> Result<(), String> {
    static PROBES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let n = PROBES.fetch_add(1, std::sync::atomic::Ordering::Relaxed) * 1000
        + u64::from(std::process::id() % 1000);
    let probe = format!("echo SHELL-$(({n}+1))-UP");
    let answer = format!("SHELL-{}-UP", n + 1);
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut sent: Option<Instant> = None;
    while Instant::now() < deadline {
        if sent.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            let _ = c
                .host(via)
                .try_json(&["vm", "console-send", "-n", vm, &probe]);
            sent = Some(Instant::now());
        }
        if console_log(c, on, id).contains(&answer) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the shell on {vm} did not answer in 90 s"))
}

/// Starts the acknowledged writer on VM `vm` (through host `via`) once its
/// shell answers, and returns how many records it found, read from host
/// `on`'s console log.
pub fn start_acker(c: &Cluster, via: usize, on: usize, vm: &str, id: &str) -> Result<u64, String> {
    wait_for_shell(c, via, on, vm, id)?;
    let before = numbers_after(&console_log(c, on, id), "RECORDS-FOUND ").len();
    c.host(via)
        .try_json(&["vm", "console-send", "-n", vm, "/lib/nasvisor/acker &"])?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let found = numbers_after(&console_log(c, on, id), "RECORDS-FOUND ");
        if found.len() > before {
            return Ok(*found.last().expect("a count"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("the writer on {vm} gave no count in 60 s"))
}

/// A guest installed from an image with [`Daemon::install_guest`]: 1 vCPU,
/// its name as its hostname.
pub struct Guest<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub memory_mib: u32,
    pub host: &'a str,
    /// The pool of its disks (the daemon's default when `None`).
    pub pool: Option<&'a str>,
    pub ha: bool,
}

impl<'a> Guest<'a> {
    /// `name` from the bundled image, 256 MiB, on `host`'s default pool,
    /// without HA.
    pub fn new(name: &'a str, host: &'a str) -> Self {
        Guest {
            name,
            image: "nasvisor-mini",
            memory_mib: 256,
            host,
            pool: None,
            ha: false,
        }
    }
}
