//! `nasvisor firmware reboot` through a running `nasvisord`: refused while
//! a VM runs on the host (409 naming it, the reboot command not run), then,
//! once the VM is off, answered and the reboot command run: here a script
//! that records its arguments in a marker file. With `--force` a job shuts
//! the VM down first and the daemon starts it again when it is back; a
//! reboot command that fails calls the reboot off and starts it again at
//! once. A host without firmware management refuses it too.

mod common;

use common::{Daemon, DaemonSetup};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

const OPTIONS: &str = "root=PARTLABEL=nasvisor-a ro rootfstype=erofs nasvisor.slot=a console=ttyS0";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A host with firmware management on file slots whose reboot command is
/// a script that records its arguments in `<fw>/rebooted` (or fails, with
/// "no reboot for you" on stderr, while `<fw>/fail` exists).
fn firmware_host() -> (
    Daemon,
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
) {
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
            "#!/bin/sh\n[ -e {fail} ] && {{ echo no reboot for you >&2; exit 3; }}\necho \"$@\" > {m}.tmp\nmv {m}.tmp {m}\n",
            fail = s(&p.join("fail")),
            m = s(&marker)
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
    (d, fw, marker, script)
}

#[test]
fn a_reboot_is_refused_while_a_vm_runs_and_runs_the_reboot_command_once_none_does() {
    let (d, _fw, marker, script) = firmware_host();

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
        common::events_of_kind(&events, "host-reboot")
            .iter()
            .any(|e| e["target"] == "host/nas1"),
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

/// Waits until job `id` ended; its view.
fn job_ended(d: &Daemon, id: &str, within: Duration) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let j = d.json(&["job", "show", id]);
        if j["state"] != "running" {
            return j;
        }
        assert!(t.elapsed() < within, "job {id} still running: {j:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until VM `vm` runs again under a QEMU other than `not`; its pid.
fn running_again(d: &Daemon, vm: &str, not: i64) -> i64 {
    let t = Instant::now();
    loop {
        let v = d.json(&["vm", "show", vm]);
        if let Some(pid) = v["pid"].as_i64().filter(|p| *p != not) {
            if v["state"] == "running" {
                return pid;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "VM {vm} was not started again: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_forced_reboot_shuts_the_vms_down_first_and_they_start_again_when_the_daemon_is_back() {
    let (mut d, fw, marker, _script) = firmware_host();
    d.create_blank_vm("box", &[]);
    let first = d.json(&["vm", "start", "box"])["pid"]
        .as_i64()
        .expect("a pid");
    let restart_list = d.data_dir().join("restart-after-reboot.json");

    // Forced: a job shuts the VM down (a blank VM ignores the ACPI button:
    // forced off after 3 s), then the command runs.
    let r = d.json(&["firmware", "reboot", "--force", "--shutdown-timeout", "3"]);
    assert_eq!(r["stopping"], serde_json::json!(["box"]), "{r:#}");
    let job = r["job"].as_str().expect("a job").to_string();
    assert!(
        r["message"]
            .as_str()
            .unwrap()
            .contains("reboots once VMs box are shut down (each forced off after 3 s)"),
        "{r:#}"
    );
    // The VM's id is kept before it goes down.
    let kept = std::fs::read_to_string(&restart_list).expect("the list of VMs to start again");
    let id = d.json(&["vm", "show", "box"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(kept.contains(&id), "{kept}");
    // A second reboot meanwhile is refused, naming the job.
    let e = d.fails(&["firmware", "reboot", "--force"]);
    assert!(
        e.contains(&format!("a reboot of this host is under way (job {job})")),
        "{e}"
    );
    let j = job_ended(&d, &job, Duration::from_secs(60));
    assert_eq!(j["state"], "succeeded", "{j:#}");
    assert!(
        j["message"].as_str().unwrap().contains("1 VMs shut down"),
        "{j:#}"
    );
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "--now slot b\n");
    let v = d.json(&["vm", "show", "box"]);
    assert_eq!(v["state"], "stopped", "{v:#}");
    assert!(v["pid"].is_null(), "{v:#}");
    assert!(
        v["state_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("shut down for the host's reboot: forced off after 3 s"),
        "{v:#}"
    );
    // Its QEMU is gone (or a zombie its parent has not reaped yet).
    let state = std::fs::read_to_string(format!("/proc/{first}/stat"))
        .ok()
        .and_then(|s| s[s.rfind(')')? + 2..].chars().next());
    assert!(
        matches!(state, None | Some('Z' | 'X')),
        "the VM's QEMU {first} still runs after the reboot command ({state:?})"
    );

    // The "reboot" happened: nasvisord starts again, as systemd would after
    // the boot, and starts the VM again; the list is gone.
    d.stop();
    d.spawn();
    let second = running_again(&d, "box", first);
    assert!(!restart_list.exists(), "the list is kept after the restart");

    // A reboot command that fails: the reboot is called off and the VM it
    // shut down runs again at once, the job says why.
    std::fs::remove_file(&marker).unwrap();
    std::fs::write(fw.path().join("fail"), b"").unwrap();
    let r = d.json(&["firmware", "reboot", "--force", "--shutdown-timeout", "1"]);
    let job = r["job"].as_str().expect("a job").to_string();
    let j = job_ended(&d, &job, Duration::from_secs(60));
    assert_eq!(j["state"], "failed", "{j:#}");
    assert!(
        j["error"]
            .as_str()
            .unwrap()
            .contains("exited with exit status: 3: no reboot for you"),
        "{j:#}"
    );
    running_again(&d, "box", second);
    assert!(!restart_list.exists());
    assert!(!marker.exists());
    let events = d.json(&["event", "list"]);
    assert!(
        common::events_of_kind(&events, "host-reboot-failed")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("its VMs are started again"))),
        "{events:#}"
    );
}
