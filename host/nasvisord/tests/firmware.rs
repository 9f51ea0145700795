//! Through a running `nasvisord` and the `nasvisor` CLI: a bundle built
//! and signed with the CLI installs into the inactive slot of an appliance
//! laid out in a temporary directory (64 MiB sparse slot files, an ESP
//! directory, a command line file), `firmware status` shows it pending, and
//! the next start of the daemon, after the "reboot" into the new slot and
//! its blessing, records the update as succeeded and raises the floor.

mod common;

use common::{Daemon, DaemonSetup};
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output};

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

#[test]
fn a_bundle_installs_through_the_daemon_and_its_next_start_records_the_update() {
    let fw = tempfile::tempdir().unwrap();
    let p = fw.path();
    let mut setup = DaemonSetup::single_host();
    setup.api_extra = common::firmware_lines(p);
    // The layout exists before the daemon starts (it judges it at start).
    std::fs::create_dir_all(p.join("esp/loader/entries")).unwrap();
    std::fs::write(p.join("cmdline"), OPTIONS).unwrap();
    let mut d = Daemon::start_with(setup);
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
