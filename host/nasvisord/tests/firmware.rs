//! Through a running `nasvisord` and the `nasvisor` CLI: a bundle built
//! and signed with the CLI installs into the inactive slot of an appliance
//! laid out in a temporary directory (64 MiB sparse slot files, an ESP
//! directory, a command line file), `firmware status` shows it pending, and
//! the next start of the daemon, after the "reboot" into the new slot and
//! its blessing, records the update as succeeded and raises the floor.

mod common;

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

/// Slots, ESP, command line and a signed bundle of a real erofs image.
fn appliance(p: &Path, cli: impl Fn(&[&str]) -> Output) -> std::path::PathBuf {
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
    std::fs::copy(daemon, dir.join("nasvisord")).unwrap();
    let cli = Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name("nasvisor");
    std::fs::copy(&cli, dir.join("nasvisor")).unwrap();
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
