//! Through a running `nasvisord` and the `nasvisor` CLI: a bundle built
//! and signed with the CLI installs into the inactive slot of an appliance
//! laid out in a temporary directory (64 MiB sparse slot files, an ESP
//! directory, a command line file), `firmware status` shows it pending, and
//! the next start of the daemon, after the "reboot" into the new slot and
//! its blessing, records the update as succeeded and raises the floor.

mod common;

use common::cluster::{console_log_files, read_console_files, Cluster};
use common::{counts, Daemon, DaemonSetup};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

const OPTIONS: &str = "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0";

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}{}",
        String::from_utf8_lossy(&o.stderr),
        String::from_utf8_lossy(&o.stdout)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The slot files, the ESP with slot a's entry (2.0.1) and the command
/// line of an appliance booted from slot a, in `p`.
fn slot_layout(p: &Path) {
    for slot in ["a", "b"] {
        std::fs::File::create(p.join(format!("slot-{slot}.img")))
            .unwrap()
            .set_len(64 << 20)
            .unwrap();
    }
    let entries = p.join("esp/loader/entries");
    std::fs::create_dir_all(&entries).unwrap();
    std::fs::write(
        entries.join("nasvisor-1-a.conf"),
        format!("title nasvisor 2.0.1 (slot a)\nversion 2.0.1\nlinux /nasvisor/a/vmlinuz\ninitrd /nasvisor/a/initrd.img\noptions {OPTIONS}\n"),
    )
    .unwrap();
    std::fs::write(p.join("cmdline"), OPTIONS).unwrap();
}

/// Slots, ESP, command line and a signed bundle of a real erofs image.
fn appliance(p: &Path, cli: impl Fn(&[&str]) -> Output) -> std::path::PathBuf {
    slot_layout(p);
    let root = p.join("root");
    std::fs::create_dir_all(root.join("boot")).unwrap();
    std::fs::write(root.join("boot/vmlinuz"), b"kernel 2.1.0").unwrap();
    std::fs::write(root.join("boot/initrd.img"), vec![3u8; 200_000]).unwrap();
    let img = p.join("rootfs.erofs");
    let o = Command::new("mkfs.erofs")
        .arg(&img)
        .arg(&root)
        .output()
        .expect("mkfs.erofs (erofs-utils)");
    assert!(o.status.success());
    std::fs::create_dir_all(p.join("trusted")).unwrap();
    ok(
        cli(&["plugin", "keygen", "--out", s(&p.join("vendor"))]),
        "keygen",
    );
    std::fs::rename(p.join("vendor.pub"), p.join("trusted/vendor.pub")).unwrap();
    let bundle = p.join("acme-2.1.0.nvfw");
    ok(
        cli(&[
            "firmware",
            "build",
            "--payload",
            s(&img),
            "--class",
            "reboot",
            "--product",
            "acme-nas",
            "--compatible",
            "acme-nas4",
            "--version",
            "2.1.0",
            "--key",
            s(&p.join("vendor.key")),
            "--out",
            s(&bundle),
        ]),
        "firmware build",
    );
    bundle
}

/// A daemon with `[firmware]` on over the layout in `p` (`extra`: more
/// keys of `[firmware]`), booted from slot a.
fn firmware_daemon(p: &Path, extra: &[&str]) -> Daemon {
    let mut setup = DaemonSetup::single_host();
    setup.api_extra = common::firmware_lines(p);
    setup.api_extra.extend(extra.iter().map(|l| l.to_string()));
    // The layout exists before the daemon starts (it judges it at start).
    std::fs::create_dir_all(p.join("esp/loader/entries")).unwrap();
    std::fs::write(p.join("cmdline"), OPTIONS).unwrap();
    Daemon::start_with(setup)
}

#[test]
fn a_bundle_installs_through_the_daemon_and_its_next_start_records_the_update() {
    let fw = tempfile::tempdir().unwrap();
    let p = fw.path();
    let mut d = firmware_daemon(p, &[]);
    let bundle = appliance(p, |args| d.cli(args));

    let v = d.json(&["firmware", "status"]);
    assert_eq!(v["booted"], "a");
    assert_eq!(v["slots"][0]["state"], "booted");
    assert_eq!(v["slots"][1]["state"], "empty");

    let out = ok(
        d.cli(&["firmware", "install", s(&bundle), "--wait"]),
        "firmware install",
    );
    assert!(out.contains("firmware-install"), "{out}");
    let v = d.json(&["firmware", "status"]);
    assert_eq!(v["slots"][1]["state"], "pending", "{v}");
    assert_eq!(v["slots"][1]["tries_left"], 3);
    assert_eq!(v["slots"][1]["version"], "2.1.0");
    assert_eq!(v["pending"]["slot"], "b");
    assert_eq!(v["last_outcome"]["result"], "installed");
    let table = ok(d.cli(&["firmware", "status"]), "firmware status");
    assert!(table.contains("pending (3 tries left)"), "{table}");
    assert_eq!(
        std::fs::read(p.join("esp/nasvisor/b/vmlinuz")).unwrap(),
        b"kernel 2.1.0"
    );
    // A missing file is refused by the CLI before anything is sent.
    let e = d.fails(&["firmware", "install", "/nonexistent.nvfw"]);
    assert!(e.contains("not a bundle file"), "{e}");

    // The reboot into slot b: systemd-boot counts the try down, and the
    // daemon starts before systemd-bless-boot blesses the entry (it waits
    // for this daemon's /healthz).
    let entries = p.join("esp/loader/entries");
    std::fs::rename(
        entries.join("nasvisor-2-b+3.conf"),
        entries.join("nasvisor-2-b+2-1.conf"),
    )
    .unwrap();
    std::fs::write(
        p.join("cmdline"),
        OPTIONS
            .replace("nasvisor-a", "nasvisor-b")
            .replace("slot=a", "slot=b"),
    )
    .unwrap();
    d.stop();
    d.spawn();
    let v: Value = d.json(&["firmware", "status"]);
    assert_eq!(v["booted"], "b");
    assert_eq!(v["pending"]["slot"], "b", "{v}");
    // The blessing, after the start: the running daemon judges the update
    // within seconds, not at its next start.
    std::fs::rename(
        entries.join("nasvisor-2-b+2-1.conf"),
        entries.join("nasvisor-2-b.conf"),
    )
    .unwrap();
    let blessed = std::time::Instant::now();
    let v: Value = loop {
        let v: Value = d.json(&["firmware", "status"]);
        if v["pending"].is_null() {
            break v;
        }
        assert!(
            blessed.elapsed() < std::time::Duration::from_secs(20),
            "the update is still pending 20 s after the blessing: {v}"
        );
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(v["booted"], "b");
    assert_eq!(v["slots"][0]["state"], "good");
    assert_eq!(v["slots"][1]["state"], "booted");
    assert_eq!(v["rollback_floor"], "2.1.0");
    assert_eq!(v["last_outcome"]["result"], "succeeded");
    assert_eq!(v["pending"], Value::Null);
    let events = d.json(&["event", "list"]);
    assert!(
        events.to_string().contains("firmware-update-succeeded"),
        "{events}"
    );

    // A bundle for another board is refused from its first bytes, with
    // the reason, before it is stored: no job, no outcome, no upload left.
    let other = p.join("acme8-2.2.0.nvfw");
    ok(
        d.cli(&[
            "firmware",
            "build",
            "--payload",
            s(&p.join("rootfs.erofs")),
            "--class",
            "reboot",
            "--product",
            "acme-nas",
            "--compatible",
            "acme-nas8",
            "--version",
            "2.2.0",
            "--key",
            s(&p.join("vendor.key")),
            "--out",
            s(&other),
        ]),
        "firmware build",
    );
    let e = d.fails(&["firmware", "install", s(&other), "--wait"]);
    assert!(
        e.contains("bundle") && e.contains("incompatible board"),
        "{e}"
    );
    let v: Value = d.json(&["firmware", "status"]);
    assert_eq!(v["last_outcome"]["result"], "succeeded", "{v}");
    assert_eq!(v["slots"][0]["state"], "good", "{v}");
    let jobs = d.json(&["job", "list"]).to_string();
    assert_eq!(jobs.matches("firmware-install").count(), 1, "{jobs}");
}

/// A service payload (`nasvisord`, the CLI, the plugins) as a tar, its
/// nasvisord `daemon`; signed into a `service` bundle of `version`.
fn service_bundle(p: &Path, d: &Daemon, daemon: &Path, version: &str) -> std::path::PathBuf {
    let dir = p.join(format!("service-{version}"));
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    // Stripped, as a vendor ships them (the build's have line tables: a
    // bundle five times the size, copied and hashed on every host).
    let stripped = |from: &Path, to: &Path| {
        let o = Command::new("strip")
            .arg("--strip-unneeded")
            .arg("-o")
            .arg(to)
            .arg(from)
            .output();
        if !o.is_ok_and(|o| o.status.success()) {
            // Not an ELF file (a test's script): as it is.
            std::fs::copy(from, to).unwrap();
        }
    };
    stripped(daemon, &dir.join("nasvisord"));
    let cli = Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name("nasvisor");
    stripped(&cli, &dir.join("nasvisor"));
    for e in std::fs::read_dir(nasvisor_plugin_host::testkit::plugin_dir())
        .unwrap()
        .flatten()
    {
        std::fs::copy(e.path(), dir.join("plugins").join(e.file_name())).unwrap();
    }
    let tar = p.join(format!("service-{version}.tar"));
    let o = Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&dir)
        .args(["nasvisord", "nasvisor", "plugins"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let bundle = p.join(format!("service-{version}.nvfw"));
    ok(
        d.cli(&[
            "firmware",
            "build",
            "--payload",
            s(&tar),
            "--class",
            "service",
            "--product",
            "acme-nas",
            "--compatible",
            "acme-nas4",
            "--version",
            version,
            "--key",
            s(&p.join("vendor.key")),
            "--out",
            s(&bundle),
        ]),
        "firmware build (service)",
    );
    bundle
}

/// The last `COUNT` on the VM's console, once it is above `above`.
fn count_above(d: &Daemon, vm: &str, above: u64) -> u64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let o = d.cli(&["vm", "console", vm, "--tail", "65536"]);
        let last = counts(&String::from_utf8_lossy(&o.stdout))
            .last()
            .copied()
            .unwrap_or(0);
        if last > above {
            return last;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the guest's counter stayed at {last}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// The status, once its service release has no trial left.
fn settled(d: &Daemon) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v = d.json(&["firmware", "status"]);
        if v["service"]["on_trial"].is_null() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still on trial: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn a_service_release_replaces_the_daemon_under_running_vms_and_a_broken_one_is_rolled_back() {
    let fw = tempfile::tempdir().unwrap();
    let p = fw.path();
    let mut d = firmware_daemon(p, &["service-deadline-s = 30"]);
    // Booted from slot a at 2.0.1, the vendor key trusted.
    appliance(p, |args| d.cli(args));
    let pid = d.pid();

    // A running guest, counting on its console.
    let vm = d.json(&[
        "vm",
        "create",
        "svc",
        "--vcpus",
        "1",
        "--memory",
        "256",
        "--image",
        "nasvisor-mini",
        "--wait",
    ]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    d.wait_console("svc", "NASVISOR-READY", Duration::from_secs(150));
    d.json(&["vm", "console-send", "-n", "svc", "/lib/nasvisor/counter &"]);
    let qemus = d.qemu_pids();
    assert_eq!(qemus.len(), 1, "{qemus:?}");
    let before = count_above(&d, "svc", 10);

    // 2.0.2: this very nasvisord as a service release.
    let good = service_bundle(p, &d, Path::new(env!("CARGO_BIN_EXE_nasvisord")), "2.0.2");
    let o = d.cli(&["firmware", "install", s(&good), "--wait"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    ok(o, "firmware install (service)");
    assert!(err.contains("service release 2.0.2 staged"), "{err}");
    d.wait_restart(Duration::from_secs(60));
    // The same process (exec), now the release's binary.
    assert_eq!(d.pid(), pid);
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
    assert!(
        exe.ends_with("firmware/service/releases/2.0.2/root/nasvisord"),
        "{}",
        exe.display()
    );
    let v = settled(&d);
    assert_eq!(v["service"]["running"], "2.0.2", "{v:#}");
    assert_eq!(v["service"]["current"], "2.0.2", "{v:#}");
    assert_eq!(v["service"]["previous"], Value::Null, "{v:#}");
    assert_eq!(v["last_outcome"]["result"], "succeeded", "{v:#}");
    assert_eq!(v["rollback_floor"], "2.0.2", "{v:#}");
    let hosts = d.json(&["host", "list"]);
    assert_eq!(hosts[0]["version"], "2.0.2", "{hosts:#}");
    // The guest never stopped: the same QEMU, still counting.
    assert_eq!(d.qemu_pids(), qemus);
    let vm = d.json(&["vm", "show", "svc"]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    let after = count_above(&d, "svc", before);

    // 2.0.3: a nasvisord that exits at once. It is rolled back to 2.0.2
    // by the watchdog, which starts 2.0.2 again in its place.
    let broken = p.join("broken-nasvisord");
    std::fs::write(&broken, "#!/bin/sh\necho 'broken release' >&2\nexit 1\n").unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&broken, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bad = service_bundle(p, &d, &broken, "2.0.3");
    ok(
        d.cli(&["firmware", "install", s(&bad), "--wait"]),
        "firmware install (broken service)",
    );
    d.wait_restart(Duration::from_secs(90));
    let v = settled(&d);
    assert_eq!(v["service"]["running"], "2.0.2", "{v:#}");
    assert_eq!(v["service"]["current"], "2.0.2", "{v:#}");
    assert_eq!(v["last_outcome"]["result"], "failed", "{v:#}");
    assert_eq!(v["last_outcome"]["version"], "2.0.3", "{v:#}");
    assert_eq!(v["last_outcome"]["code"], "unhealthy", "{v:#}");
    let reason = v["last_outcome"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("exited before it became healthy")
            && reason.contains("back on service release 2.0.2"),
        "{reason}"
    );
    assert_eq!(v["rollback_floor"], "2.0.2", "{v:#}");
    let now = d.running_pid().expect("the daemon the roll-back started");
    assert_ne!(
        now as u32, pid,
        "the watchdog started 2.0.2 in the broken one's place"
    );
    assert_eq!(d.qemu_pids(), qemus);
    count_above(&d, "svc", after);
    // 2.0.4: a nasvisord that never answers (it hangs). At the deadline
    // the watchdog kills it and starts 2.0.2 again.
    let hangs = p.join("hanging-nasvisord");
    std::fs::write(&hangs, "#!/bin/sh\nexec sleep 3600\n").unwrap();
    std::fs::set_permissions(&hangs, std::fs::Permissions::from_mode(0o755)).unwrap();
    let hung = service_bundle(p, &d, &hangs, "2.0.4");
    let started = std::time::Instant::now();
    ok(
        d.cli(&["firmware", "install", s(&hung), "--wait"]),
        "firmware install (hanging service)",
    );
    d.wait_restart(Duration::from_secs(120));
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "rolled back before its deadline: {:?}",
        started.elapsed()
    );
    let v = settled(&d);
    assert_eq!(v["service"]["running"], "2.0.2", "{v:#}");
    assert_eq!(v["last_outcome"]["version"], "2.0.4", "{v:#}");
    let reason = v["last_outcome"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("did not become healthy within 30 s"),
        "{reason}"
    );
    assert_eq!(d.qemu_pids(), qemus);

    // Below the floor now: 2.0.1 (the slot's) is refused before upload.
    let old = service_bundle(p, &d, Path::new(env!("CARGO_BIN_EXE_nasvisord")), "2.0.1");
    let e = d.fails(&["firmware", "install", s(&old), "--wait"]);
    assert!(e.contains("below"), "{e}");
}

/// Installs guest `names[i]` on host i + 1, all at once (through host 1),
/// and waits until each runs: their views.
fn install_guests(c: &Cluster, names: &[&str]) -> Vec<Value> {
    let token = c.host(1).admin_token();
    let installs: Vec<std::process::Child> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let host = c.name(i + 1);
            let args = [
                "--json",
                "vm",
                "create",
                name,
                "--image",
                "nasvisor-mini",
                "--vcpus",
                "1",
                "--memory",
                "256",
                "--host",
                &host,
                "--wait",
            ];
            c.host(1)
                .cli_command(&token, &args)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    installs
        .into_iter()
        .map(|child| {
            let out = ok(child.wait_with_output().unwrap(), "vm create");
            let v: Value = serde_json::from_str(&out).unwrap();
            assert_eq!(v["state"], "running", "{v:#}");
            v
        })
        .collect()
}

/// The last `COUNT` in the console log `files`.
fn last_count(files: &[std::path::PathBuf]) -> u64 {
    counts(&read_console_files(files))
        .last()
        .copied()
        .unwrap_or(0)
}

/// Watches the guests' counters (each prints `COUNT n` every 100 ms) from
/// their console log files until `stop`: the longest time, ms, between two
/// new counts of one guest, per guest. A guest paused, or stopped, shows
/// as a long gap; one that kept running as about 100 ms.
fn watch_counters(
    logs: Vec<Vec<std::path::PathBuf>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<Vec<u64>> {
    std::thread::spawn(move || {
        let mut last: Vec<(u64, std::time::Instant)> = logs
            .iter()
            .map(|l| (last_count(l), std::time::Instant::now()))
            .collect();
        let mut longest = vec![0u64; logs.len()];
        while !stop.load(std::sync::atomic::Ordering::SeqCst) {
            for (i, l) in logs.iter().enumerate() {
                let n = last_count(l);
                let now = std::time::Instant::now();
                if n != last[i].0 {
                    let gap = now.duration_since(last[i].1).as_millis() as u64;
                    longest[i] = longest[i].max(gap);
                    last[i] = (n, now);
                }
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // A guest that stopped counting for good shows its silence so far.
        for (i, (_, at)) in last.iter().enumerate() {
            longest[i] = longest[i].max(at.elapsed().as_millis() as u64);
        }
        longest
    })
}

/// Follows the cluster update until it is no longer running (within
/// `timeout`), asking whichever host answers: each host's new endpoint is
/// picked up as it restarts in its turn; with `reboots`, a daemon a
/// simulated reboot stopped is started again (as systemd would; without,
/// a daemon that exited is a service release's watchdog's to restart).
/// Its last status.
fn follow_update(c: &mut Cluster, timeout: Duration, reboots: bool) -> Value {
    let deadline = std::time::Instant::now() + timeout;
    let mut last = Value::Null;
    loop {
        for i in 1..=c.len() {
            let h = c.host_mut(i);
            if reboots && h.exited() {
                // A simulated reboot stopped it: started again, as systemd
                // would at the end of the boot.
                h.spawn();
            }
            h.restarted();
        }
        for i in 1..=c.len() {
            if let Ok(v) = c
                .host(i)
                .try_json_within(&["cluster", "update", "status"], Duration::from_secs(10))
            {
                if v["state"] != "running" {
                    return v;
                }
                last = v;
                break;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the cluster update did not end within {timeout:?}: {last:#}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Host i's version, as the cluster's host list says.
fn versions(c: &Cluster, via: usize) -> Vec<(String, String)> {
    let hosts = c.host(via).json(&["host", "list"]);
    let mut v: Vec<(String, String)> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h["name"].as_str().unwrap_or_default().to_string(),
                h["version"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn a_rolling_update_takes_three_hosts_to_a_service_release_under_running_vms_and_stops_at_a_failing_host(
) {
    // Three appliances booted from slot a at 2.0.1, trusting one vendor key.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let p = dirs[0].path();
    let cli = Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name("nasvisor");
    let o = Command::new(&cli)
        .args(["plugin", "keygen", "--out", s(&p.join("vendor"))])
        .output()
        .unwrap();
    ok(o, "keygen");
    for d in &dirs {
        slot_layout(d.path());
        std::fs::create_dir_all(d.path().join("trusted")).unwrap();
        std::fs::copy(p.join("vendor.pub"), d.path().join("trusted/vendor.pub")).unwrap();
    }
    let fw: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            let mut l = common::firmware_lines(d.path());
            l.push("service-deadline-s = 60".into());
            l
        })
        .collect();
    let mut c = Cluster::start_custom(3, |_| Vec::new(), |i| fw[i - 1].clone());
    c.form();

    // A counting guest on every host.
    let names: Vec<String> = (1..=3).map(|i| format!("roll{i}")).collect();
    let ids: Vec<String> =
        install_guests(&c, &names.iter().map(String::as_str).collect::<Vec<_>>())
            .iter()
            .map(|v| v["id"].as_str().unwrap().to_string())
            .collect();
    for (i, name) in names.iter().enumerate() {
        c.host(1)
            .wait_console(name, "NASVISOR-READY", Duration::from_secs(200));
        c.host(1)
            .json(&["vm", "console-send", "-n", name, "/lib/nasvisor/counter &"]);
        let files = console_log_files(&c, i + 1, &ids[i]);
        common::cluster::eventually(Duration::from_secs(60), "the guest counts", || {
            let n = last_count(&files);
            if n > 5 {
                Ok(n)
            } else {
                Err(format!("COUNT {n}"))
            }
        });
    }
    let qemus: Vec<Vec<i32>> = (1..=3).map(|i| c.live_qemus(i)).collect();
    for (i, q) in qemus.iter().enumerate() {
        assert_eq!(q.len(), 1, "host {} runs one QEMU: {q:?}", i + 1);
    }
    let logs: Vec<Vec<std::path::PathBuf>> = (1..=3)
        .map(|i| console_log_files(&c, i, &ids[i - 1]))
        .collect();

    // 2.0.2: this very nasvisord as a service release, for every host.
    let good = service_bundle(
        p,
        c.host(1),
        Path::new(env!("CARGO_BIN_EXE_nasvisord")),
        "2.0.2",
    );
    let leader = c.leader();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watch = watch_counters(logs.clone(), stop.clone());
    let started = std::time::Instant::now();
    let v = c.host(1).json(&["cluster", "update", s(&good)]);
    assert_eq!(v["state"], "running", "{v:#}");
    assert_eq!(v["version"], "2.0.2", "{v:#}");
    assert_eq!(v["class"], "service", "{v:#}");
    let order: Vec<&str> = v["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap())
        .collect();
    assert_eq!(order.len(), 3, "{v:#}");
    assert_eq!(order[2], c.name(leader), "the leader goes last: {v:#}");
    // A second update while this one runs is refused.
    let e = c.host(2).fails(&["cluster", "update", s(&good)]);
    assert!(
        e.contains("resume or abort it first") || e.contains("is running"),
        "{e}"
    );

    let end = follow_update(&mut c, Duration::from_secs(600), false);
    let took = started.elapsed();
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let gaps = watch.join().unwrap();
    assert_eq!(end["state"], "done", "{end:#}");
    for h in end["hosts"].as_array().unwrap() {
        assert_eq!(h["state"], "done", "{end:#}");
        assert_ne!(h["from_version"], "2.0.2", "{end:#}");
        assert_eq!(h["version"], "2.0.2", "{end:#}");
    }
    for i in 1..=3 {
        c.host_mut(i).restarted();
    }
    let want: Vec<(String, String)> = (1..=3).map(|i| (c.name(i), "2.0.2".to_string())).collect();
    assert_eq!(versions(&c, 1), want);
    // No host is left cordoned; every guest kept its QEMU and kept counting.
    let hosts = c.host(1).json(&["host", "list"]);
    for h in hosts.as_array().unwrap() {
        assert_eq!(h["cordoned"], false, "{hosts:#}");
    }
    for i in 1..=3 {
        assert_eq!(c.live_qemus(i), qemus[i - 1], "host {i}'s QEMU");
    }
    let longest = *gaps.iter().max().unwrap();
    assert!(
        longest < 2000,
        "a guest stopped counting for {longest} ms during the update: {gaps:?}"
    );
    println!(
        "ROLLOUT-FIGURES hosts=3 class=service total_s={:.1} longest_count_gap_ms={longest} per_vm_ms={gaps:?}",
        took.as_secs_f64()
    );

    // 2.0.3 fails on nas2 only: its nasvisord exits there at once (the
    // others run this nasvisord). The rollout stops at nas2; its own
    // watchdog rolls it back to 2.0.2; every host keeps serving.
    let real = Path::new(env!("CARGO_BIN_EXE_nasvisord"));
    let wrapper = p.join("fails-on-nas2");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do\n  case \"$a\" in\n    *nasvisord.toml) grep -q '^name = \"nas2\"$' \"$a\" && {{ echo 'injected failure on nas2' >&2; exit 1; }} ;;\n  esac\ndone\nexec {} \"$@\"\n",
            real.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    let bad = service_bundle(p, c.host(1), &wrapper, "2.0.3");
    let v = c.host(1).json(&["cluster", "update", s(&bad)]);
    assert_eq!(v["state"], "running", "{v:#}");
    let end = follow_update(&mut c, Duration::from_secs(600), false);
    assert_eq!(end["state"], "failed", "{end:#}");
    let failure = end["failure"].as_str().unwrap_or_default();
    assert!(failure.starts_with("host nas2:"), "{end:#}");
    assert!(failure.contains("did not become healthy"), "{end:#}");
    let advice = end["advice"].as_str().unwrap_or_default();
    assert!(
        advice.contains("cluster update resume") && advice.contains("cluster update abort"),
        "{end:#}"
    );
    let nas2 = end["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["host"] == "nas2")
        .unwrap()
        .clone();
    assert_eq!(nas2["state"], "failed", "{end:#}");
    // The hosts before nas2 in the order run 2.0.3, those after it 2.0.2,
    // nas2 2.0.2 again; all online, none cordoned, every guest counting.
    for i in 1..=3 {
        c.host_mut(i).restarted();
    }
    let order: Vec<String> = end["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["host"].as_str().unwrap().to_string())
        .collect();
    let at = order.iter().position(|h| h == "nas2").unwrap();
    let hosts = common::cluster::eventually(Duration::from_secs(60), "nas2 back on 2.0.2", || {
        let hosts = c.host(1).try_json(&["host", "list"])?;
        let nas2 = hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["name"] == "nas2")
            .cloned()
            .unwrap_or_default();
        if nas2["version"] == "2.0.2" && nas2["online"] == true {
            Ok(hosts)
        } else {
            Err(format!("{hosts:#}"))
        }
    });
    for h in hosts.as_array().unwrap() {
        let name = h["name"].as_str().unwrap();
        let pos = order.iter().position(|o| o == name).unwrap();
        let want = if pos < at { "2.0.3" } else { "2.0.2" };
        assert_eq!(h["version"], want, "{name}: {hosts:#}");
        assert_eq!(h["online"], true, "{hosts:#}");
        assert_eq!(h["cordoned"], false, "{hosts:#}");
    }
    for i in 1..=3 {
        assert_eq!(c.live_qemus(i), qemus[i - 1], "host {i}'s QEMU");
        let before = last_count(&logs[i - 1]);
        common::cluster::eventually(Duration::from_secs(30), "the guest counts on", || {
            let n = last_count(&logs[i - 1]);
            if n > before {
                Ok(n)
            } else {
                Err(format!("COUNT {n}"))
            }
        });
    }
    // Resume is refused while nothing changed? No: it goes again, and
    // abort ends it as it stands.
    let v = c.host(1).json(&["cluster", "update", "abort"]);
    assert_eq!(v["state"], "aborted", "{v:#}");
    let e = c.host(1).fails(&["cluster", "update", "resume"]);
    assert!(e.contains("only a failed one resumes"), "{e}");
}

/// A reboot, simulated for host directory `p`: systemd-boot boots the
/// newest entry (the updated slot b, blessed at once: the daemon's own
/// judge then finds the update good), and nasvisord stops (its parent is
/// the reboot command's; the test starts it again, as systemd would).
fn simulated_reboot(p: &Path) -> std::path::PathBuf {
    let script = p.join("reboot.sh");
    let b = OPTIONS
        .replace("nasvisor-a", "nasvisor-b")
        .replace("slot=a", "slot=b");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nset -e\ncd '{dir}/esp/loader/entries'\nfor e in *-b+*.conf; do mv \"$e\" \"${{e%%+*}}.conf\"; done\nprintf '%s' '{b}' > '{dir}/cmdline'\nkill -TERM $PPID\n",
            dir = p.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    script
}

#[test]
fn a_rolling_reboot_update_evacuates_each_host_reboots_it_and_moves_its_vms_back() {
    // Three appliances booted from slot a at 2.0.1; a reboot bundle 2.1.0
    // (a real erofs slot image) signed by the vendor key all of them trust.
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let p = dirs[0].path();
    let cli = Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name("nasvisor");
    let bundle = appliance(p, |args| Command::new(&cli).args(args).output().unwrap());
    for d in &dirs[1..] {
        slot_layout(d.path());
        std::fs::create_dir_all(d.path().join("trusted")).unwrap();
        std::fs::copy(
            p.join("trusted/vendor.pub"),
            d.path().join("trusted/vendor.pub"),
        )
        .unwrap();
    }
    let fw: Vec<Vec<String>> = dirs
        .iter()
        .map(|d| {
            let mut l = common::firmware_lines(d.path());
            l.push(format!(
                "reboot-command = [\"{}\"]",
                simulated_reboot(d.path()).display()
            ));
            l
        })
        .collect();
    let mut c = Cluster::start_custom(3, |_| Vec::new(), |i| fw[i - 1].clone());
    c.form();
    let want: Vec<(String, String)> = (1..=3).map(|i| (c.name(i), "2.0.1".to_string())).collect();
    assert_eq!(
        versions(&c, 1),
        want,
        "each host runs its booted slot's version"
    );

    // A counting guest on hosts 1 and 2.
    let names = ["rb1", "rb2"];
    install_guests(&c, &names);
    for name in names {
        c.host(1)
            .wait_console(name, "NASVISOR-READY", Duration::from_secs(200));
        c.host(1)
            .json(&["vm", "console-send", "-n", name, "/lib/nasvisor/counter &"]);
    }
    let before: Vec<u64> = names.iter().map(|n| count_above(c.host(1), n, 5)).collect();

    let started = std::time::Instant::now();
    let v = c.host(1).json(&["cluster", "update", s(&bundle)]);
    assert_eq!(v["class"], "reboot", "{v:#}");
    assert_eq!(v["move_back"], true, "{v:#}");
    let end = follow_update(&mut c, Duration::from_secs(900), true);
    let took = started.elapsed();
    assert_eq!(end["state"], "done", "{end:#}");
    for i in 1..=3 {
        let h = c.host_mut(i);
        if h.exited() {
            h.spawn();
        }
        h.restarted();
    }
    // Every host booted slot b at 2.1.0, its update judged good.
    let want: Vec<(String, String)> = (1..=3).map(|i| (c.name(i), "2.1.0".to_string())).collect();
    assert_eq!(versions(&c, 1), want, "{end:#}");
    for i in 1..=3 {
        let v = c.host(i).json(&["firmware", "status"]);
        assert_eq!(v["booted"], "b", "host {i}: {v:#}");
        assert_eq!(v["pending"], Value::Null, "host {i}: {v:#}");
        assert_eq!(v["last_outcome"]["result"], "succeeded", "host {i}: {v:#}");
        assert_eq!(v["rollback_floor"], "2.1.0", "host {i}: {v:#}");
    }
    // Hosts 1 and 2 had a guest: each moved away and back; host 3 none.
    for h in end["hosts"].as_array().unwrap() {
        let moved = h["moved"].as_array().unwrap();
        match h["host"].as_str().unwrap() {
            "nas1" => assert!(
                moved.len() == 1 && moved[0].as_str().unwrap().starts_with("rb1 → "),
                "{end:#}"
            ),
            "nas2" => assert!(
                moved.len() == 1 && moved[0].as_str().unwrap().starts_with("rb2 → "),
                "{end:#}"
            ),
            _ => assert!(moved.is_empty(), "{end:#}"),
        }
    }
    // The guests run on their own hosts again, never restarted: counting on.
    for (i, name) in names.iter().enumerate() {
        let v = c.host(1).json(&["vm", "show", name]);
        assert_eq!(v["state"], "running", "{v:#}");
        assert_eq!(v["host"], c.name(i + 1), "{v:#}");
        count_above(c.host(1), name, before[i]);
    }
    let hosts = c.host(1).json(&["host", "list"]);
    for h in hosts.as_array().unwrap() {
        assert_eq!(h["cordoned"], false, "{hosts:#}");
    }
    // The guests' pauses: each live migration's downtime.
    let jobs = c.host(1).json(&["job", "list"]);
    let downtimes: Vec<u64> = jobs
        .as_array()
        .unwrap()
        .iter()
        .filter(|j| j["kind"] == "migrate" && j["state"] == "succeeded")
        .map(|j| common::cluster::move_figures(j).1)
        .collect();
    assert_eq!(downtimes.len(), 4, "two moves per guest: {jobs:#}");
    println!(
        "ROLLOUT-FIGURES hosts=3 class=reboot total_s={:.1} migrations={} longest_pause_ms={} pauses_ms={downtimes:?}",
        took.as_secs_f64(),
        downtimes.len(),
        downtimes.iter().max().unwrap()
    );
}
