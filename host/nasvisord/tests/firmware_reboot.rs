//! `nasvisor firmware reboot` through a running `nasvisord`: refused while
//! a VM runs on the host (409 naming it, the reboot command not run), then,
//! once the VM is off, answered and the reboot command run: here a script
//! that records its arguments in a marker file. A host without firmware
//! management refuses it too.

mod common;

use common::{Daemon, DaemonSetup};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const OPTIONS: &str = "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_reboot_is_refused_while_a_vm_runs_and_runs_the_reboot_command_once_none_does() {
    let fw = tempfile::tempdir().unwrap();
    let p = fw.path();
    for slot in ["a", "b"] {
        std::fs::write(p.join(format!("slot-{slot}.img")), b"").unwrap();
    }
    std::fs::create_dir_all(p.join("esp/loader/entries")).unwrap();
    std::fs::create_dir_all(p.join("trusted")).unwrap();
    std::fs::write(p.join("cmdline"), OPTIONS).unwrap();
    // The "reboot": a real command that records that it ran, and how.
    let marker = p.join("rebooted");
    let script = p.join("reboot.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > {}.tmp\nmv {0}.tmp {0}\n",
            s(&marker)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut setup = DaemonSetup::single_host();
    setup.api_extra = common::firmware_lines(p);
    setup.api_extra.push(format!(
        "reboot-command = [\"{}\", \"--now\", \"slot b\"]",
        s(&script)
    ));
    let d = Daemon::start_with(setup);

    d.create_blank_vm("box", &[]);
    let vm = d.json(&["vm", "start", "box"]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    let e = d.fails(&["firmware", "reboot"]);
    assert!(
        e.contains("VMs run on this host: box; stop or migrate them first"),
        "{e}"
    );
    assert!(e.contains("409") || e.contains("conflict"), "{e}");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!marker.exists(), "a refused reboot ran the command");

    let vm = d.json(&["vm", "force-off", "box"]);
    assert_eq!(vm["state"], "stopped", "{vm:#}");
    let r = d.json(&["firmware", "reboot"]);
    assert_eq!(r["host"], "nas1", "{r:#}");
    assert_eq!(
        r["command"],
        serde_json::json!([s(&script), "--now", "slot b"]),
        "{r:#}"
    );
    assert_eq!(r["delay_ms"], 1000, "{r:#}");
    // The command runs after the answer, with its arguments as given.
    let asked = Instant::now();
    while !marker.exists() {
        assert!(
            asked.elapsed() < Duration::from_secs(20),
            "the reboot command did not run"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "--now slot b\n");
    let events = d.json(&["event", "list"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "host-reboot" && e["target"] == "host/nas1"),
        "{events:#}"
    );
}

#[test]
fn a_host_without_firmware_management_is_not_rebooted_from_the_api() {
    let d = Daemon::start();
    let e = d.fails(&["firmware", "reboot"]);
    assert!(
        e.contains("firmware management is not enabled on this host"),
        "{e}"
    );
}
