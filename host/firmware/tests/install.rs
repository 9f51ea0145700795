//! Installing bundles into an appliance laid out in a temporary directory:
//! the slots are 64 MiB sparse files, the ESP a directory, the payload a
//! real erofs image built with `mkfs.erofs`, the bundles built and signed
//! with the crate's own `build` and a test key. The slot is mounted (loop)
//! or extracted with `fsck.erofs` as on the appliance.

use nasvisor_firmware::{
    build, BuildSpec, Class, InstallError, OutcomeKind, Phase, Policy, Reconciled, Slot,
    SlotConfig, SlotSet, SlotState, State,
};
use nasvisor_signing::{generate_key, read_public_keys_in, read_signing_key, write_keypair};
use semver::Version;
use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};
use std::process::Command;
use time::macros::datetime;

const SLOT_SIZE: u64 = 64 * 1024 * 1024;
const BOOTED_OPTIONS: &str =
    "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0 quiet";

/// An appliance booted from slot a (version 2.0.1), with a vendor key.
struct Appliance {
    dir: tempfile::TempDir,
    slots: SlotSet,
}

impl Appliance {
    fn new() -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path();
        let keys = p.join("keys");
        let trusted = keys.join("trusted");
        std::fs::create_dir_all(&trusted).unwrap();
        write_keypair(
            &generate_key(),
            &keys.join("vendor.key"),
            &trusted.join("vendor.pub"),
        )
        .unwrap();
        write_keypair(
            &generate_key(),
            &keys.join("other.key"),
            &keys.join("other.pub"),
        )
        .unwrap();
        for name in ["slot-a.img", "slot-b.img"] {
            let f = std::fs::File::create(p.join(name)).unwrap();
            f.set_len(SLOT_SIZE).unwrap();
        }
        // Slot a holds something: its bytes must never change.
        std::fs::write(p.join("slot-a.img"), vec![0xa5; 8192]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(p.join("slot-a.img"))
            .unwrap()
            .set_len(SLOT_SIZE)
            .unwrap();
        let esp = p.join("esp");
        std::fs::create_dir_all(esp.join("loader/entries")).unwrap();
        std::fs::create_dir_all(esp.join("nasvisor/a")).unwrap();
        std::fs::write(esp.join("nasvisor/a/vmlinuz"), b"kernel of a").unwrap();
        std::fs::write(esp.join("nasvisor/a/initrd.img"), b"initrd of a").unwrap();
        std::fs::write(
            esp.join("loader/entries/nasvisor-1-a.conf"),
            format!("title nasvisor 2.0.1 (slot a)\nversion 2.0.1\nlinux /nasvisor/a/vmlinuz\ninitrd /nasvisor/a/initrd.img\noptions {BOOTED_OPTIONS}\n"),
        )
        .unwrap();
        std::fs::write(esp.join("loader/loader.conf"), b"timeout 0\n").unwrap();
        std::fs::write(p.join("cmdline"), format!("{BOOTED_OPTIONS}\n")).unwrap();
        let slots = SlotSet::new(SlotConfig {
            esp,
            devices: [p.join("slot-a.img"), p.join("slot-b.img")],
            cmdline: p.join("cmdline"),
            state_dir: p.join("data/firmware"),
            tries: 3,
            efivars: p.join("efivars"),
        });
        Appliance { dir, slots }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn policy(&self) -> Policy {
        let trusted = read_public_keys_in(&self.path("keys/trusted"))
            .unwrap()
            .into_iter()
            .map(|t| t.key)
            .collect();
        Policy {
            product: Some("acme-nas".into()),
            board: Some("acme-nas4".into()),
            now: datetime!(2026-02-01 00:00 UTC),
            ..Policy::new(trusted)
        }
    }

    /// A slot image: a real erofs with /boot/vmlinuz (a link, as Debian
    /// has it), /boot/initrd.img (1 MiB, so the payload streams in several
    /// pieces) and an /etc file.
    fn image(&self, tag: &str) -> PathBuf {
        self.image_with(tag, &[])
    }

    /// A slot image with more files (path inside, content).
    fn image_with(&self, tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let root = self.path(&format!("root-{tag}"));
        std::fs::create_dir_all(root.join("boot")).unwrap();
        for (inside, content) in files {
            std::fs::write(root.join(inside), content).unwrap();
        }
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("boot/vmlinuz-6.1"), format!("kernel {tag}")).unwrap();
        std::os::unix::fs::symlink("vmlinuz-6.1", root.join("boot/vmlinuz")).unwrap();
        std::fs::write(root.join("boot/initrd.img"), initrd(tag)).unwrap();
        std::fs::write(
            root.join("etc/os-release"),
            format!("NAME=nasvisor {tag}\n"),
        )
        .unwrap();
        let img = self.path(&format!("rootfs-{tag}.erofs"));
        let out = Command::new("mkfs.erofs")
            .arg("-T0")
            .arg(&img)
            .arg(&root)
            .output()
            .expect("mkfs.erofs (erofs-utils; scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        img
    }

    /// A signed bundle of a fresh image.
    fn bundle(&self, tag: &str, change: impl FnOnce(&mut BuildSpec)) -> PathBuf {
        self.bundle_with_key(tag, "keys/vendor.key", change)
    }

    fn bundle_with_key(
        &self,
        tag: &str,
        key: &str,
        change: impl FnOnce(&mut BuildSpec),
    ) -> PathBuf {
        let mut s = spec();
        change(&mut s);
        let out = self.path(&format!("{tag}.nvfw"));
        let key = read_signing_key(&self.path(key)).unwrap();
        build(&s, &self.image(tag), Some(&key), &out).unwrap();
        out
    }

    /// A signed bundle of an image with more files.
    fn bundle_with_files(&self, tag: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let out = self.path(&format!("{tag}.nvfw"));
        let key = read_signing_key(&self.path("keys/vendor.key")).unwrap();
        build(&spec(), &self.image_with(tag, files), Some(&key), &out).unwrap();
        out
    }

    /// The board's EFI variables: Secure Boot on or off, and the
    /// certificates (DER) of db and dbx.
    fn efivars(&self, secure: bool, db: &[&[u8]], dbx: &[&[u8]]) {
        let dir = self.path("efivars");
        std::fs::create_dir_all(&dir).unwrap();
        let global = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
        std::fs::write(
            dir.join(format!("SecureBoot-{global}")),
            [6, 0, 0, 0, secure as u8],
        )
        .unwrap();
        std::fs::write(dir.join(format!("SetupMode-{global}")), [6, 0, 0, 0, 0]).unwrap();
        for (name, certs) in [("db", db), ("dbx", dbx)] {
            // EFI_SIGNATURE_LISTs of EFI_CERT_X509_GUID, one per certificate.
            let mut v = vec![0x27, 0, 0, 0];
            for der in certs {
                let size = 16 + der.len();
                v.extend_from_slice(&[
                    0xa1, 0x59, 0xc0, 0xa5, 0xe4, 0x94, 0xa7, 0x4a, 0x87, 0xb5, 0xab, 0x15, 0x5c,
                    0x2b, 0xf0, 0x72,
                ]);
                v.extend_from_slice(&((28 + size) as u32).to_le_bytes());
                v.extend_from_slice(&0u32.to_le_bytes());
                v.extend_from_slice(&(size as u32).to_le_bytes());
                v.extend_from_slice(&[0x42; 16]);
                v.extend_from_slice(der);
            }
            let f = dir.join(format!("{name}-d719b2cb-3d3a-4596-a3bc-dad00e67656f"));
            std::fs::write(f, v).unwrap();
        }
    }

    fn install(&self, bundle: &Path) -> Result<nasvisor_firmware::Installed, InstallError> {
        self.slots
            .install(bundle, &self.policy(), &mut |_| ControlFlow::Continue(()))
    }

    /// Everything an install could touch: both slot files and every file
    /// of the ESP.
    fn snapshot(&self) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        for name in ["slot-a.img", "slot-b.img"] {
            out.insert(name.to_string(), std::fs::read(self.path(name)).unwrap());
        }
        walk(&self.path("esp"), &self.path("esp"), &mut out);
        out
    }

    fn set_booted(&self, slot: &str) {
        let cmdline = BOOTED_OPTIONS
            .replace("nasvisor-a", &format!("nasvisor-{slot}"))
            .replace("nasvisor.slot=a", &format!("nasvisor.slot={slot}"));
        std::fs::write(self.path("cmdline"), cmdline).unwrap();
    }

    fn rename_entry(&self, from: &str, to: &str) {
        let dir = self.path("esp/loader/entries");
        std::fs::rename(dir.join(from), dir.join(to)).unwrap();
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.path("esp/loader/entries"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        if e.file_type().unwrap().is_dir() {
            out.insert(format!("{rel}/"), Vec::new());
            walk(root, &p, out);
        } else {
            out.insert(rel, std::fs::read(&p).unwrap());
        }
    }
}

fn initrd(tag: &str) -> Vec<u8> {
    let mut v = format!("initrd {tag}\n").into_bytes();
    let mut x: u32 = 0x1234_5678;
    while v.len() < 1024 * 1024 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        v.push(x as u8);
    }
    v
}

fn spec() -> BuildSpec {
    BuildSpec {
        product: "acme-nas".into(),
        compatible: vec!["acme-nas4".into()],
        version: Version::new(2, 1, 0),
        min_version: None,
        class: Class::Reboot,
        created: datetime!(2026-01-10 09:00 UTC),
        expires: datetime!(2026-07-09 09:00 UTC),
        payload_name: Some("rootfs.erofs".into()),
    }
}

// ---------------------------------------------------------------- installs

#[test]
fn a_good_install_writes_the_inactive_slot_copies_its_boot_files_and_adds_a_counted_entry() {
    let app = Appliance::new();
    let bundle = app.bundle("v210", |_| {});
    let before = app.snapshot();
    let mut phases = Vec::new();
    let done = app
        .slots
        .install(&bundle, &app.policy(), &mut |p| {
            phases.push(p);
            ControlFlow::Continue(())
        })
        .unwrap();
    assert_eq!(done.slot, Slot::B);
    assert_eq!(done.generation, 2);
    assert_eq!(done.entry, "nasvisor-2-b+3.conf");
    let percents: Vec<u8> = phases.iter().map(|p| p.percent).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
    assert_eq!(phases.last().unwrap().phase, Phase::Done);
    assert_eq!(*percents.last().unwrap(), 100);

    // The slot holds the image byte for byte.
    let image = std::fs::read(app.path("rootfs-v210.erofs")).unwrap();
    let slot = std::fs::read(app.path("slot-b.img")).unwrap();
    assert_eq!(slot.len() as u64, SLOT_SIZE);
    assert_eq!(&slot[..image.len()], &image[..]);

    // Its kernel (through the link) and initrd are on the ESP.
    assert_eq!(
        std::fs::read(app.path("esp/nasvisor/b/vmlinuz")).unwrap(),
        b"kernel v210"
    );
    assert_eq!(
        std::fs::read(app.path("esp/nasvisor/b/initrd.img")).unwrap(),
        initrd("v210")
    );
    // The entry, with the booted entry's options and the slot swapped.
    let entry =
        std::fs::read_to_string(app.path("esp/loader/entries/nasvisor-2-b+3.conf")).unwrap();
    assert_eq!(
        entry,
        "title nasvisor 2.1.0 (slot b)\nversion 2.1.0\nlinux /nasvisor/b/vmlinuz\ninitrd /nasvisor/b/initrd.img\noptions root=PARTLABEL=nasvisor-b ro rootfstype=erofs nasvisor.slot=b console=ttyS0 quiet\n"
    );
    assert_eq!(app.entries(), ["nasvisor-1-a.conf", "nasvisor-2-b+3.conf"]);

    // The booted slot, its entry and its boot files are untouched.
    let after = app.snapshot();
    for (k, v) in &before {
        if k.starts_with("nasvisor/b") || k == "slot-b.img" {
            continue;
        }
        assert_eq!(after.get(k), Some(v), "{k} changed");
    }

    let status = app.slots.status().unwrap();
    assert_eq!(status.booted, Slot::A);
    assert_eq!(status.slots[0].state, SlotState::Booted);
    assert_eq!(status.slots[0].version.as_deref(), Some("2.0.1"));
    assert_eq!(status.slots[0].blessed, Some(true));
    assert_eq!(status.slots[1].state, SlotState::Pending { tries_left: 3 });
    assert_eq!(status.slots[1].version.as_deref(), Some("2.1.0"));
    assert_eq!(status.clock_floor.as_deref(), Some("2026-01-10T09:00:00Z"));
    assert_eq!(
        status.rollback_floor, None,
        "the floor rises only once it booted"
    );
    let pending = status.pending.unwrap();
    assert_eq!((pending.slot, pending.generation), (Slot::B, 2));
    assert_eq!(status.last_outcome.unwrap().result, OutcomeKind::Installed);
}

#[test]
fn a_second_install_replaces_the_pending_slot_with_a_newer_generation() {
    let app = Appliance::new();
    app.install(&app.bundle("one", |_| {})).unwrap();
    let done = app
        .install(&app.bundle("two", |s| s.version = Version::new(2, 2, 0)))
        .unwrap();
    assert_eq!(done.generation, 3);
    assert_eq!(app.entries(), ["nasvisor-1-a.conf", "nasvisor-3-b+3.conf"]);
    assert_eq!(
        std::fs::read(app.path("esp/nasvisor/b/vmlinuz")).unwrap(),
        b"kernel two"
    );
}

/// Refusals before any write: the slots and the ESP are byte for byte as
/// they were, and the outcome names the refusal.
#[test]
fn a_refused_bundle_touches_no_slot_and_records_why() {
    let app = Appliance::new();
    // Slot b already holds a good older version: it must survive.
    app.install(&app.bundle("old", |s| s.version = Version::new(2, 0, 5)))
        .unwrap();
    app.rename_entry("nasvisor-2-b+3.conf", "nasvisor-2-b.conf");

    type Make = Box<dyn Fn(&Appliance) -> PathBuf>;
    let cases: Vec<(&str, Make, &str)> = vec![
        (
            "tampered manifest",
            Box::new(|a| {
                let b = a.bundle("tm", |_| {});
                let mut bytes = std::fs::read(&b).unwrap();
                let text = String::from_utf8_lossy(&bytes[512..1024]).into_owned();
                let at = 512 + text.find("acme-nas4").unwrap();
                bytes[at + 8] = b'8';
                std::fs::write(&b, bytes).unwrap();
                b
            }),
            "tampered-manifest",
        ),
        (
            "tampered payload",
            Box::new(|a| {
                let b = a.bundle("tp", |_| {});
                let mut bytes = std::fs::read(&b).unwrap();
                let n = bytes.len();
                // A byte of the initrd, deep inside the payload.
                bytes[n / 2] ^= 0xff;
                std::fs::write(&b, bytes).unwrap();
                b
            }),
            "tampered-payload",
        ),
        (
            "truncated",
            Box::new(|a| {
                let b = a.bundle("tr", |_| {});
                let bytes = std::fs::read(&b).unwrap();
                std::fs::write(&b, &bytes[..bytes.len() / 2]).unwrap();
                b
            }),
            "truncated",
        ),
        (
            "wrong key",
            Box::new(|a| a.bundle_with_key("wk", "keys/other.key", |_| {})),
            "untrusted-signer",
        ),
        (
            "wrong board",
            Box::new(|a| a.bundle("wb", |s| s.compatible = vec!["acme-nas8".into()])),
            "incompatible-board",
        ),
        (
            "expired",
            Box::new(|a| {
                a.bundle("ex", |s| {
                    s.created = datetime!(2025-01-01 00:00 UTC);
                    s.expires = datetime!(2026-01-31 00:00 UTC);
                })
            }),
            "expired",
        ),
        (
            "downgrade below the booted version",
            Box::new(|a| a.bundle("dg", |s| s.version = Version::new(2, 0, 0))),
            "below-rollback-floor",
        ),
        (
            "service bundle",
            Box::new(|a| a.bundle("sv", |s| s.class = Class::Service)),
            "wrong-class",
        ),
    ];
    for (what, make, code) in cases {
        let bundle = make(&app);
        let before = app.snapshot();
        let e = app.install(&bundle).unwrap_err();
        assert_eq!(e.code(), code, "{what}: {e}");
        assert!(
            app.snapshot() == before,
            "{what}: a slot or the ESP changed"
        );
        let state = State::load(&app.slots.state_path()).unwrap();
        let outcome = state.last_outcome.unwrap();
        assert_eq!(outcome.result, OutcomeKind::Failed, "{what}");
        assert_eq!(outcome.code.as_deref(), Some(code), "{what}");
        assert!(!outcome.reason.unwrap().is_empty());
    }
    let status = app.slots.status().unwrap();
    assert_eq!(status.slots[1].state, SlotState::Good);
    assert_eq!(status.slots[1].version.as_deref(), Some("2.0.5"));
}

#[test]
fn a_payload_larger_than_the_slot_is_refused_before_it_is_written() {
    let app = Appliance::new();
    let bundle = app.bundle("big", |_| {});
    std::fs::File::options()
        .write(true)
        .open(app.path("slot-b.img"))
        .unwrap()
        .set_len(512 * 1024)
        .unwrap();
    let before = app.snapshot();
    let e = app.install(&bundle).unwrap_err();
    assert_eq!(e.code(), "payload-too-large", "{e}");
    assert!(e.to_string().contains("524288"), "{e}");
    assert!(app.snapshot() == before);
}

#[test]
fn an_install_cancelled_mid_stream_leaves_the_slot_without_an_entry() {
    let app = Appliance::new();
    app.install(&app.bundle("old", |s| s.version = Version::new(2, 0, 5)))
        .unwrap();
    let before = std::fs::read(app.path("esp/loader/entries/nasvisor-1-a.conf")).unwrap();
    let bundle = app.bundle("new", |s| s.version = Version::new(2, 2, 0));
    let mut writes = 0;
    let e = app
        .slots
        .install(&bundle, &app.policy(), &mut |p| {
            if p.phase == Phase::Writing && p.percent > 30 {
                writes += 1;
                if writes == 2 {
                    return ControlFlow::Break(());
                }
            }
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert_eq!(e.code(), "cancelled", "{e}");
    assert_eq!(app.entries(), ["nasvisor-1-a.conf"]);
    assert!(!app.path("esp/nasvisor/b/vmlinuz").exists());
    assert_eq!(
        std::fs::read(app.path("esp/loader/entries/nasvisor-1-a.conf")).unwrap(),
        before
    );
    let status = app.slots.status().unwrap();
    assert_eq!(status.slots[1].state, SlotState::Empty);
    assert_eq!(
        status.last_outcome.unwrap().code.as_deref(),
        Some("cancelled")
    );
}

#[test]
fn a_bundle_changed_between_the_check_and_the_write_is_refused_and_the_slot_left_unbootable() {
    let app = Appliance::new();
    let bundle = app.bundle("swap", |_| {});
    let path = bundle.clone();
    let e = app
        .slots
        .install(&bundle, &app.policy(), &mut |p| {
            if p.phase == Phase::Writing && p.percent == 30 {
                // The whole bundle verified; now a payload byte changes.
                let mut bytes = std::fs::read(&path).unwrap();
                let n = bytes.len();
                bytes[n / 2] ^= 0xff;
                std::fs::write(&path, bytes).unwrap();
            }
            ControlFlow::Continue(())
        })
        .unwrap_err();
    assert_eq!(e.code(), "tampered-payload", "{e}");
    assert_eq!(app.entries(), ["nasvisor-1-a.conf"]);
    assert!(!app.path("esp/nasvisor/b/vmlinuz").exists());
}

#[test]
fn a_slot_that_is_not_an_erofs_image_gets_no_entry() {
    let app = Appliance::new();
    let junk = app.path("junk.img");
    std::fs::write(&junk, vec![7u8; 100_000]).unwrap();
    let key = read_signing_key(&app.path("keys/vendor.key")).unwrap();
    let bundle = app.path("junk.nvfw");
    build(&spec(), &junk, Some(&key), &bundle).unwrap();
    let e = app.install(&bundle).unwrap_err();
    assert_eq!(e.code(), "boot-files", "{e}");
    assert_eq!(app.entries(), ["nasvisor-1-a.conf"]);
    assert!(!app.path("esp/nasvisor/b/vmlinuz").exists());
}

// ---------------------------------------------------------------- floors

#[test]
fn a_clock_earlier_than_the_clock_floor_does_not_let_an_expired_bundle_pass() {
    let app = Appliance::new();
    State {
        clock_floor: Some(datetime!(2026-06-01 00:00 UTC)),
        ..State::default()
    }
    .save(&app.slots.state_path())
    .unwrap();
    let bundle = app.bundle("exp", |s| s.expires = datetime!(2026-03-01 00:00 UTC));
    let before = app.snapshot();
    let mut policy = app.policy();
    policy.now = datetime!(1970-01-01 00:00 UTC);
    let e = app
        .slots
        .install(&bundle, &policy, &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert_eq!(e.code(), "expired", "{e}");
    assert!(e.to_string().contains("now 2026-06-01T00:00:00Z"), "{e}");
    assert!(app.snapshot() == before);
}

#[test]
fn the_stored_rollback_floor_refuses_a_bundle_below_it() {
    let app = Appliance::new();
    State {
        rollback_floor: Some(Version::new(2, 5, 0)),
        ..State::default()
    }
    .save(&app.slots.state_path())
    .unwrap();
    let e = app.install(&app.bundle("low", |_| {})).unwrap_err();
    assert_eq!(e.code(), "below-rollback-floor", "{e}");
}

// ---------------------------------------------------------------- reconcile

#[test]
fn reconcile_after_a_healthy_boot_of_the_new_slot_records_success_and_raises_the_floor() {
    let app = Appliance::new();
    app.install(&app.bundle("ok", |s| s.min_version = Some(Version::new(2, 0, 9))))
        .unwrap();
    // Not rebooted yet: still pending.
    assert_eq!(app.slots.reconcile().unwrap(), Reconciled::StillPending);
    // Booted into b, not blessed yet: still pending.
    app.set_booted("b");
    app.rename_entry("nasvisor-2-b+3.conf", "nasvisor-2-b+2-1.conf");
    assert_eq!(app.slots.reconcile().unwrap(), Reconciled::StillPending);
    // systemd-bless-boot dropped the counter.
    app.rename_entry("nasvisor-2-b+2-1.conf", "nasvisor-2-b.conf");
    assert_eq!(
        app.slots.reconcile().unwrap(),
        Reconciled::Succeeded {
            slot: Slot::B,
            version: "2.1.0".into(),
            floor: Version::new(2, 0, 9)
        }
    );
    let status = app.slots.status().unwrap();
    assert_eq!(status.booted, Slot::B);
    assert_eq!(status.slots[0].state, SlotState::Good);
    assert_eq!(status.slots[1].state, SlotState::Booted);
    assert_eq!(status.rollback_floor.as_deref(), Some("2.0.9"));
    assert_eq!(status.pending, None);
    assert_eq!(status.last_outcome.unwrap().result, OutcomeKind::Succeeded);
    // Done once.
    assert_eq!(app.slots.reconcile().unwrap(), Reconciled::Nothing);
}

#[test]
fn reconcile_after_the_new_slot_used_up_its_tries_reports_the_failed_update() {
    let app = Appliance::new();
    app.install(&app.bundle("bad", |_| {})).unwrap();
    app.rename_entry("nasvisor-2-b+3.conf", "nasvisor-2-b+0-3.conf");
    // systemd-boot fell back to slot a.
    let Reconciled::Failed { slot, reason, .. } = app.slots.reconcile().unwrap() else {
        panic!("not failed");
    };
    assert_eq!(slot, Slot::B);
    assert_eq!(
        reason,
        "slot b did not become healthy after 3 tries; back on slot a"
    );
    let status = app.slots.status().unwrap();
    assert_eq!(status.slots[0].state, SlotState::Booted);
    assert_eq!(status.slots[1].state, SlotState::Bad { tries: 3 });
    assert_eq!(status.pending, None);
    assert_eq!(status.rollback_floor, None);
    let outcome = status.last_outcome.unwrap();
    assert_eq!(outcome.result, OutcomeKind::Failed);
    assert_eq!(outcome.reason.as_deref(), Some(reason.as_str()));
}

#[test]
fn reconcile_leaves_a_slot_with_tries_left_pending_when_the_other_slot_booted() {
    let app = Appliance::new();
    app.install(&app.bundle("manual", |_| {})).unwrap();
    app.rename_entry("nasvisor-2-b+3.conf", "nasvisor-2-b+2-1.conf");
    assert_eq!(app.slots.reconcile().unwrap(), Reconciled::StillPending);
    let status = app.slots.status().unwrap();
    assert_eq!(status.slots[1].state, SlotState::Pending { tries_left: 2 });
    assert!(status.pending.is_some());
}

#[test]
fn installing_needs_a_slot_on_the_command_line() {
    let app = Appliance::new();
    std::fs::write(app.path("cmdline"), "console=ttyS0 quiet\n").unwrap();
    let before = app.snapshot();
    let e = app.install(&app.bundle("nocmd", |_| {})).unwrap_err();
    assert!(e.to_string().contains("no nasvisor.slot=a|b"), "{e}");
    assert!(app.snapshot() == before);
}

#[test]
fn a_slot_device_that_is_the_booted_one_is_refused_before_anything_is_written() {
    let app = Appliance::new();
    // Slot b's device is slot a's under another name (a misconfiguration).
    let alias = app.path("alias-of-a.img");
    std::os::unix::fs::symlink(app.path("slot-a.img"), &alias).unwrap();
    let mut config = app.slots.config().clone();
    config.devices[1] = alias;
    let slots = SlotSet::new(config);
    let bundle = app.bundle("same", |_| {});
    let before = app.snapshot();
    let e = slots
        .install(&bundle, &app.policy(), &mut |_| ControlFlow::Continue(()))
        .unwrap_err();
    assert_eq!(e.code(), "booted-slot", "{e}");
    assert!(
        e.to_string()
            .contains("refusing to install over the booted slot"),
        "{e}"
    );
    assert!(app.snapshot() == before);
}

#[test]
fn a_slot_left_mounted_by_a_crashed_install_is_unmounted_and_removed_at_start() {
    let app = Appliance::new();
    let img = app.image("stale");
    let state_dir = app.slots.config().state_dir.clone();
    let root = state_dir.join(".slot.crashed/root");
    std::fs::create_dir_all(&root).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "erofs", "-o", "ro,loop"])
        .arg(&img)
        .arg(&root)
        .status()
        .unwrap()
        .success();
    if mounted {
        assert!(root.join("boot/vmlinuz").exists());
    }
    assert_eq!(app.slots.clean_stale(), 1);
    assert!(!state_dir.join(".slot.crashed").exists());
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
    assert!(!mounts.contains(".slot.crashed"), "{mounts}");
}

// ---------------------------------------------------------------- service

/// A tar of `members` (name, contents; `None`: a symbolic link to
/// `nasvisord`).
fn service_tar(a: &Appliance, tag: &str, members: &[Member]) -> PathBuf {
    let path = a.path(&format!("service-{tag}.tar"));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    for (name, body) in members {
        let mut h = tar::Header::new_ustar();
        match body {
            Some(body) => {
                h.set_size(body.len() as u64);
                h.set_mode(0o644);
                h.set_entry_type(tar::EntryType::Regular);
                // The name as written, `..` and all (set_path refuses it).
                h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
                h.set_cksum();
                b.append(&h, *body).unwrap();
            }
            None => {
                h.set_size(0);
                h.set_entry_type(tar::EntryType::Symlink);
                b.append_link(&mut h, name, "nasvisord").unwrap();
            }
        }
    }
    b.finish().unwrap();
    path
}

/// A payload member: its name and contents (`None`: a symbolic link).
type Member<'a> = (&'a str, Option<&'a [u8]>);

/// The members of a good service payload.
const SERVICE: &[Member] = &[
    ("nasvisord", Some(b"#!/bin/sh\necho release\n")),
    ("nasvisor", Some(b"#!/bin/sh\necho cli\n")),
    ("plugins/nasvisor-scheduler.wasm", Some(b"\0asm plugin")),
];

impl Appliance {
    /// A signed service bundle of `version` with `members`.
    fn service_bundle(&self, version: &str, members: &[Member]) -> PathBuf {
        let mut s = spec();
        s.class = Class::Service;
        s.version = Version::parse(version).unwrap();
        s.payload_name = Some("service.tar".into());
        let out = self.path(&format!("service-{version}.nvfw"));
        let key = read_signing_key(&self.path("keys/vendor.key")).unwrap();
        build(&s, &service_tar(self, version, members), Some(&key), &out).unwrap();
        out
    }

    fn install_service(&self, bundle: &Path) -> Result<nasvisor_firmware::Staged, InstallError> {
        self.slots
            .install_service(bundle, &self.policy(), &mut |_| ControlFlow::Continue(()))
    }

    fn state(&self) -> State {
        State::load(&self.path("data/firmware/state.json")).unwrap()
    }
}

#[test]
fn a_service_release_is_staged_launched_verified_and_judged() {
    use std::os::unix::fs::PermissionsExt;
    let app = Appliance::new();
    let before = app.snapshot();
    let staged = app
        .install_service(&app.service_bundle("2.0.2", SERVICE))
        .unwrap();
    assert_eq!(staged.version, "2.0.2");
    assert_eq!(staged.previous, None, "the slot's own nasvisord before");
    // No slot and no file of the ESP changed: nothing runs it yet.
    assert!(app.snapshot() == before);
    let state = app.state();
    assert_eq!(state.service.current.as_deref(), Some("2.0.2"));
    assert_eq!(state.service.trial.as_ref().unwrap().launches, 0);
    assert_eq!(state.last_outcome.unwrap().result, OutcomeKind::Installed);

    // The start: verified again, unpacked afresh, on trial.
    let l = app.slots.service_launch(&app.policy()).unwrap().unwrap();
    assert!(l.trial);
    assert_eq!(l.version, "2.0.2");
    assert_eq!(
        std::fs::read(l.daemon()).unwrap(),
        b"#!/bin/sh\necho release\n"
    );
    let mode = std::fs::metadata(l.daemon()).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o755);
    assert_eq!(
        std::fs::read(l.plugins().unwrap().join("nasvisor-scheduler.wasm")).unwrap(),
        b"\0asm plugin"
    );

    // A second start while still on trial: it died before it was
    // healthy. Rolled back to the slot's own nasvisord.
    assert_eq!(app.slots.service_launch(&app.policy()).unwrap(), None);
    let state = app.state();
    assert_eq!(state.service.current, None);
    let o = state.last_outcome.unwrap();
    assert_eq!(o.result, OutcomeKind::Failed);
    assert_eq!(o.code.as_deref(), Some("unhealthy"));
    assert!(
        o.reason
            .unwrap()
            .contains("back on the slot's own nasvisord"),
        "the outcome says where it went back to"
    );
    assert_eq!(
        state.rollback_floor, None,
        "the floor rises only when healthy"
    );

    // Again, and healthy this time: succeeded, the floor rises.
    app.install_service(&app.service_bundle("2.0.2", SERVICE))
        .unwrap();
    let l = app.slots.service_launch(&app.policy()).unwrap().unwrap();
    assert!(app.slots.service_healthy(&l.version).unwrap());
    assert!(!app.slots.service_healthy(&l.version).unwrap(), "once");
    let state = app.state();
    assert_eq!(state.rollback_floor, Some(Version::new(2, 0, 2)));
    assert_eq!(state.last_outcome.unwrap().result, OutcomeKind::Succeeded);
    assert!(state.service.trial.is_none());
    let l = app.slots.service_launch(&app.policy()).unwrap().unwrap();
    assert!(!l.trial, "a healthy release runs at every start");

    // 2.0.3 on trial; its watchdog gives up: back on 2.0.2.
    let staged = app
        .install_service(&app.service_bundle("2.0.3", SERVICE))
        .unwrap();
    assert_eq!(staged.previous.as_deref(), Some("2.0.2"));
    assert!(app
        .slots
        .service_rollback("2.0.3", "not healthy within 30 s")
        .unwrap());
    assert!(!app.slots.service_rollback("2.0.3", "again").unwrap());
    let l = app.slots.service_launch(&app.policy()).unwrap().unwrap();
    assert_eq!(l.version, "2.0.2");
    assert!(
        !app.path("data/firmware/service/releases/2.0.3").exists(),
        "pruned"
    );

    // A release changed on the data partition is not run: back on the
    // slot's own, with the reason.
    let kept = app.path("data/firmware/service/releases/2.0.2/bundle.nvfw");
    let mut bytes = std::fs::read(&kept).unwrap();
    let n = bytes.len();
    bytes[n - 2048] ^= 1;
    std::fs::write(&kept, bytes).unwrap();
    assert_eq!(app.slots.service_launch(&app.policy()).unwrap(), None);
    let o = app.state().last_outcome.unwrap();
    assert_eq!(o.code.as_deref(), Some("release-invalid"), "{o:?}");

    // Below the floor (2.0.2) and the reboot class are refused.
    let e = app
        .install_service(&app.service_bundle("2.0.1", SERVICE))
        .unwrap_err();
    assert_eq!(e.code(), "below-rollback-floor", "{e}");
    let e = app.install_service(&app.bundle("rb", |_| {})).unwrap_err();
    assert_eq!(e.code(), "wrong-class", "{e}");
}

#[test]
fn a_slot_as_new_as_the_release_drops_it() {
    let app = Appliance::new();
    app.install_service(&app.service_bundle("2.0.2", SERVICE))
        .unwrap();
    let l = app.slots.service_launch(&app.policy()).unwrap().unwrap();
    app.slots.service_healthy(&l.version).unwrap();
    // A reboot into a slot at 2.1.0: its own nasvisord runs.
    let entries = app.path("esp/loader/entries");
    std::fs::write(
        entries.join("nasvisor-2-b.conf"),
        "title nasvisor 2.1.0 (slot b)\nversion 2.1.0\n",
    )
    .unwrap();
    app.set_booted("b");
    assert_eq!(app.slots.service_launch(&app.policy()).unwrap(), None);
    assert!(app.state().service.current.is_none());
    assert!(!app.path("data/firmware/service/releases/2.0.2").exists());
}

#[test]
fn bad_service_payloads_are_refused_and_nothing_is_staged() {
    let app = Appliance::new();
    let cases: Vec<(&str, Vec<Member>, &str)> = vec![
        (
            "no nasvisord",
            vec![("nasvisor", Some(b"x"))],
            "holds no nasvisord",
        ),
        (
            "a link",
            vec![("nasvisord", Some(b"x")), ("nasvisor", None)],
            "only regular files",
        ),
        (
            "a path out of it",
            vec![("nasvisord", Some(b"x")), ("../evil", Some(b"x"))],
            "may be in a service payload",
        ),
        (
            "another file",
            vec![("nasvisord", Some(b"x")), ("etc/passwd", Some(b"x"))],
            "may be in a service payload",
        ),
        (
            "a hidden plugin",
            vec![("nasvisord", Some(b"x")), ("plugins/.x", Some(b"x"))],
            "may be in a service payload",
        ),
        (
            "twice",
            vec![("nasvisord", Some(b"x")), ("nasvisord", Some(b"y"))],
            "twice",
        ),
    ];
    for (i, (what, members, needle)) in cases.into_iter().enumerate() {
        let e = app
            .install_service(&app.service_bundle(&format!("2.0.{}", i + 2), &members))
            .unwrap_err();
        assert!(e.to_string().contains(needle), "{what}: {e}");
        assert!(e.to_string().contains("payload"), "{what}: {e}");
        let state = app.state();
        assert!(state.service.current.is_none(), "{what}");
        assert_eq!(state.last_outcome.unwrap().result, OutcomeKind::Failed);
        let left: Vec<_> = std::fs::read_dir(app.path("data/firmware/service/releases"))
            .unwrap()
            .collect();
        assert!(left.is_empty(), "{what}: {left:?}");
    }
}

/// A UEFI signing key made with openssl in `dir`: (key, certificate PEM,
/// certificate DER).
fn uefi_key(dir: &Path, name: &str) -> (PathBuf, PathBuf, Vec<u8>) {
    let (key, crt, der) = (
        dir.join(format!("{name}.key")),
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.der")),
    );
    let run = |c: &mut Command| {
        let out = c.output().expect("openssl (scripts/setup.sh installs it)");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("openssl")
        .args([
            "req", "-new", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "30",
        ])
        .args(["-subj", &format!("/CN={name}/"), "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&crt));
    run(Command::new("openssl")
        .args(["x509", "-outform", "der", "-in"])
        .arg(&crt)
        .arg("-out")
        .arg(&der));
    let der = std::fs::read(&der).unwrap();
    (key, crt, der)
}

/// A real EFI binary (systemd-boot's) signed with `key`.
fn signed_efi(dir: &Path, key: &Path, crt: &Path) -> Vec<u8> {
    let out = dir.join(format!(
        "signed-{}.efi",
        key.file_stem().unwrap().to_string_lossy()
    ));
    let o = Command::new("sbsign")
        .arg("--key")
        .arg(key)
        .arg("--cert")
        .arg(crt)
        .arg("--output")
        .arg(&out)
        .arg("/usr/lib/systemd/boot/efi/systemd-bootx64.efi")
        .output()
        .expect("sbsign (sbsigntool) and systemd-boot-efi (scripts/setup.sh installs them)");
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read(out).unwrap()
}

#[test]
fn under_secure_boot_only_a_slot_whose_image_the_boards_db_trusts_is_marked() {
    let app = Appliance::new();
    let keys = app.path("uefi");
    std::fs::create_dir_all(&keys).unwrap();
    let (board_key, board_crt, board_der) = uefi_key(&keys, "board");
    let (other_key, other_crt, _) = uefi_key(&keys, "other");
    let trusted = signed_efi(&keys, &board_key, &board_crt);
    let foreign = signed_efi(&keys, &other_key, &other_crt);
    let ukis = |efi: &[u8]| -> Vec<(&'static str, Vec<u8>)> {
        vec![
            ("boot/nasvisor-a.efi", efi.to_vec()),
            ("boot/nasvisor-b.efi", efi.to_vec()),
        ]
    };
    fn refs<'a>(v: &'a [(&'static str, Vec<u8>)]) -> Vec<(&'static str, &'a [u8])> {
        v.iter().map(|(p, c)| (*p, c.as_slice())).collect()
    }
    app.efivars(true, &[&board_der], &[]);

    // Signed by the board's db key: its image on the ESP, an `efi` entry.
    let good = ukis(&trusted);
    let done = app
        .install(&app.bundle_with_files("sb-good", &refs(&good)))
        .unwrap();
    assert_eq!(done.entry, "nasvisor-2-b+3.conf");
    assert_eq!(
        std::fs::read(app.path("esp/nasvisor/b/linux.efi")).unwrap(),
        trusted
    );
    assert!(!app.path("esp/nasvisor/b/vmlinuz").exists());
    assert_eq!(
        std::fs::read_to_string(app.path("esp/loader/entries/nasvisor-2-b+3.conf")).unwrap(),
        "title nasvisor 2.1.0 (slot b)\nversion 2.1.0\nefi /nasvisor/b/linux.efi\n"
    );

    // Signed by another key, or with no unified image, or by a revoked
    // key: refused before an entry is written; the earlier pending one
    // was removed with its image (the slot was being rewritten).
    let bad = ukis(&foreign);
    for (tag, files, dbx, why) in [
        (
            "sb-other",
            refs(&bad),
            false,
            "is not signed by any of the 1 certificates of the board's db",
        ),
        (
            "sb-none",
            Vec::new(),
            false,
            "has no signed unified kernel image /boot/nasvisor-b.efi",
        ),
        (
            "sb-revoked",
            refs(&good),
            true,
            "signed by a certificate the board revoked (dbx)",
        ),
    ] {
        let revoked: &[&[u8]] = if dbx { &[&board_der] } else { &[] };
        app.efivars(true, &[&board_der], revoked);
        let e = app
            .install(&app.bundle_with_files(tag, &files))
            .unwrap_err();
        assert!(
            matches!(e, InstallError::SecureBoot { slot: Slot::B, .. }),
            "{tag}: {e}"
        );
        assert!(e.to_string().contains(why), "{tag}: {e}");
        assert!(
            e.to_string()
                .starts_with("slot b would not boot under the board's Secure Boot"),
            "{e}"
        );
        assert_eq!(app.entries(), ["nasvisor-1-a.conf"], "{tag}");
        assert!(!app.path("esp/nasvisor/b/linux.efi").exists(), "{tag}");
        let status = app.slots.status().unwrap();
        assert_eq!(status.pending, None, "{tag}");
        assert_eq!(
            status.last_outcome.unwrap().result,
            OutcomeKind::Failed,
            "{tag}"
        );
    }

    // Secure Boot off: the firmware checks nothing, neither does the
    // installer.
    app.efivars(false, &[&board_der], &[]);
    let done = app
        .install(&app.bundle_with_files("sb-off", &refs(&bad)))
        .unwrap();
    assert_eq!(
        std::fs::read(app.path("esp/nasvisor/b/linux.efi")).unwrap(),
        foreign
    );
    assert!(
        std::fs::read_to_string(app.path(&format!("esp/loader/entries/{}", done.entry)))
            .unwrap()
            .ends_with("efi /nasvisor/b/linux.efi\n")
    );
}
