//! The single host for real: a `nasvisord` process driven by the `nasvisor`
//! CLI over HTTPS. VMs are real QEMUs under TCG booting the bundled guest
//! image; their bridges and taps live in a namespace the test made.
//!
//! One file although over 700 lines: no fixture is shared (each test starts
//! its own daemon in its own namespace, one test at a time under `SERIAL`);
//! a split would save no setup time and add a test binary, with another
//! copy of `common`, to build.

mod common;

use common::{alive, typed, Daemon};
use serde_json::Value;
use std::sync::Mutex;
use std::time::Duration;

/// The tests boot guests under TCG on a small machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const BOOT: Duration = Duration::from_secs(120);

/// Checks an answer against its schema in openapi.json.
fn schema_ok(value: &Value, schema: &str) {
    use nasvisor_api::types::view::*;
    let checked = match schema {
        "Host" => nasvisor_schema_check::view::<HostView>(value, schema).map(drop),
        "Image" => nasvisor_schema_check::view::<ImageView>(value, schema).map(drop),
        "Vm" => nasvisor_schema_check::view::<VmView>(value, schema).map(drop),
        "Job" => nasvisor_schema_check::view::<JobView>(value, schema).map(drop),
        "Event" => nasvisor_schema_check::view::<EventView>(value, schema).map(drop),
        "Snapshot" => nasvisor_schema_check::view::<SnapshotView>(value, schema).map(drop),
        "Volume" => nasvisor_schema_check::view::<VolumeView>(value, schema).map(drop),
        "Cluster" => nasvisor_schema_check::view::<ClusterView>(value, schema).map(drop),
        "JoinToken" => nasvisor_schema_check::view::<JoinTokenView>(value, schema).map(drop),
        other => panic!("no view for schema {other}"),
    };
    checked.unwrap_or_else(|e| panic!("answer does not match schema {schema}: {e}\n{value:#}"));
}

#[test]
fn install_from_the_bundled_image_watch_the_console_and_stop() {
    let _s = serial();
    let d = Daemon::start();
    let host = d.json(&["host"]);
    schema_ok(&host, "Host");
    assert_eq!(host["accel"], "tcg");
    let images = d.json(&["image", "list"]);
    schema_ok(&images[0], "Image");
    assert_eq!(images[0]["name"], "nasvisor-mini");
    assert_eq!(images[0]["state"], "ready");
    assert_eq!(
        images[0]["hosts"],
        serde_json::json!(["nas1"]),
        "where the copy is"
    );

    d.json(&["vswitch", "create", "lan"]);
    let vm = d.json(&[
        "vm", "create", "web1", "--vcpus", "1", "--memory", "256", "--image", "nasvisor-mini",
        "--nic", "lan", "--hostname", "web-one", "--user", "admin", "--sudo", "--ssh-key",
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@test",
        "--wait",
    ]);
    // --wait: one answer, the VM once its install job ended.
    assert_eq!(vm["name"], "web1", "{vm:#}");
    assert_eq!(vm["state"], "running", "{vm:#}");
    let vm = d.wait_vm("web1", BOOT, |v| v["state"] != "installing");
    schema_ok(&vm, "Vm");
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(vm["host"], "nas1");
    assert_eq!(vm["disks"][0]["volume"], "web1-root");
    assert_eq!(vm["disks"][1]["role"], "seed");
    let job = d.json(&["job", "show", vm["install_job"].as_str().unwrap()]);
    schema_ok(&job, "Job");
    assert_eq!(job["state"], "succeeded", "{job:#}");

    // The guest read its seed: hostname and user.
    let console = d.wait_console("web1", "NASVISOR-READY", BOOT);
    assert!(console.contains("NASVISOR-HOSTNAME=web-one"), "{console}");
    assert!(console.contains("NASVISOR-USER admin"), "{console}");
    // Typing into the console reaches the guest's shell.
    d.json(&["vm", "console-send", "-n", "web1", "echo sum-$((40+2))"]);
    d.wait_console("web1", "sum-42", Duration::from_secs(30));

    // ACPI shutdown: the guest powers off, QEMU exits.
    let pid = vm["pid"].as_i64().unwrap() as i32;
    d.json(&["vm", "stop", "web1", "--timeout", "60"]);
    let vm = d.wait_vm("web1", Duration::from_secs(90), |v| v["state"] == "stopped");
    assert!(vm["pid"].is_null());
    assert!(!alive(pid), "QEMU {pid} still runs after the shutdown");

    // Deleting it with its disks leaves the pool empty.
    d.json(&["vm", "delete", "web1", "--delete-disks"]);
    let vols = d.json(&["volume", "list", "default"]);
    assert_eq!(vols, serde_json::json!([]), "{vols:#}");
    let events = d.json(&["event", "list"]);
    schema_ok(&events[0], "Event");
    assert!(events
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "install-finished"));
}

#[test]
fn vms_outlive_a_killed_daemon_and_a_killed_qemu_is_recorded_as_crashed() {
    let _s = serial();
    let mut d = Daemon::start();
    d.create_blank_vm("box", &[]);
    let vm = d.json(&["vm", "start", "box"]);
    let vm = if vm["pid"].is_number() {
        vm
    } else {
        d.json(&["vm", "show", "box"])
    };
    assert_eq!(vm["state"], "running", "{vm:#}");
    let pid = vm["pid"].as_i64().unwrap() as i32;

    // /metrics shows it running, its host's vCPUs in use, the placement
    // decision, the store's commits and the API's requests.
    let text = scrape(&d);
    assert_eq!(
        sample(&text, "nasvisor_vms{state=\"running\"}"),
        Some(1.0),
        "{text}"
    );
    let vcpus = vm["vcpus"].as_f64().unwrap();
    let used = text
        .lines()
        .find(|l| l.starts_with("nasvisor_host_vcpus{") && l.contains("kind=\"used\""))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert_eq!(used, Some(vcpus), "{text}");
    assert!(
        sample(
            &text,
            "nasvisor_plugin_decisions_total{world=\"scheduler\",outcome=\"plugin\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "nasvisor_raft_commit_duration_seconds_count{result=\"ok\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            "nasvisor_api_request_duration_seconds_count{operation=\"vmPower\",method=\"POST\",code=\"202\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // kill -9 the daemon: the guest keeps running.
    d.kill9();
    std::thread::sleep(Duration::from_millis(500));
    assert!(alive(pid), "QEMU died with the daemon");
    d.spawn();
    let vm = d.json(&["vm", "show", "box"]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(
        vm["pid"].as_i64(),
        Some(pid as i64),
        "the restarted daemon adopted the same QEMU"
    );
    // ...and still managed: pause and resume go through QMP.
    assert_eq!(d.json(&["vm", "pause", "box"])["state"], "paused");
    assert_eq!(d.json(&["vm", "resume", "box"])["state"], "running");

    // kill -9 QEMU: recorded as crashed, with an event.
    // SAFETY: kill(2) on the QEMU pid this test's daemon reported.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    let vm = d.wait_vm("box", Duration::from_secs(20), |v| v["state"] == "crashed");
    assert!(
        vm["state_reason"].as_str().unwrap().contains("exited"),
        "{vm:#}"
    );
    assert!(vm["pid"].is_null());
    let text = scrape(&d);
    assert_eq!(
        sample(&text, "nasvisor_vms{state=\"crashed\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "nasvisor_vms{state=\"running\"}"),
        None,
        "{text}"
    );
    let events = d.json(&["event", "list"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "vm-crashed" && e["target"] == "vm/box"),
        "{events:#}"
    );
    // It starts again, and force-off stops it at once.
    assert_eq!(d.json(&["vm", "start", "box"])["state"], "running");
    let vm = d.json(&["vm", "force-off", "box"]);
    assert_eq!(vm["state"], "stopped", "{vm:#}");
}

#[test]
fn an_install_interrupted_by_a_crash_is_cleaned_up() {
    let _s = serial();
    let mut d = Daemon::start();
    let vm = d.json(&[
        "vm",
        "create",
        "half",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--image",
        "nasvisor-mini",
    ]);
    assert_eq!(vm["state"], "installing", "{vm:#}");
    // Let the install reach its first boot, then crash the daemon.
    d.wait_vm("half", BOOT, |v| {
        v["pid"].is_number() || v["state"] != "installing"
    });
    d.kill9();
    d.spawn();
    let vm = d.json(&["vm", "show", "half"]);
    assert_eq!(vm["state"], "install_failed", "{vm:#}");
    assert!(
        vm["state_reason"].as_str().unwrap().contains("interrupted"),
        "{vm:#}"
    );
    let job = d.json(&["job", "show", vm["install_job"].as_str().unwrap()]);
    assert_eq!(job["state"], "failed", "{job:#}");
    // No orphaned disks, no QEMU left.
    assert_eq!(
        d.json(&["volume", "list", "default"]),
        serde_json::json!([])
    );
    assert!(
        d.qemu_pids().iter().all(|p| !alive(*p)),
        "the install's QEMU still runs"
    );
}

#[test]
fn two_vms_on_one_vswitch_ping_each_other() {
    let _s = serial();
    let d = Daemon::start();
    d.json(&["vswitch", "create", "lab"]);
    for (name, ip) in [("pa", "192.0.2.11/24"), ("pb", "192.0.2.12/24")] {
        d.json(&[
            "vm",
            "create",
            name,
            "--vcpus",
            "1",
            "--memory",
            "192",
            "--image",
            "nasvisor-mini",
            "--nic",
            "lab",
            "--ip",
            ip,
        ]);
    }
    for name in ["pa", "pb"] {
        let vm = d.wait_vm(name, BOOT, |v| v["state"] != "installing");
        assert_eq!(vm["state"], "running", "{vm:#}");
    }
    d.wait_console("pa", "192.0.2.11/24", BOOT);
    d.wait_console("pb", "192.0.2.12/24", BOOT);
    d.json(&[
        "vm",
        "console-send",
        "-n",
        "pa",
        "ping -c 3 -W 5 192.0.2.12 && echo PING-$((1+1))-OK",
    ]);
    let out = d.wait_console("pa", "PING-2-OK", Duration::from_secs(60));
    assert!(out.contains("3 packets received"), "{out}");
}

#[test]
fn bad_input_gets_a_clear_4xx_and_changes_nothing() {
    let _s = serial();
    let d = Daemon::start();
    d.json(&["vswitch", "create", "lan"]);
    d.json(&["vm", "create", "taken", "--vcpus", "1", "--memory", "128"]);
    let before = (
        d.json(&["vm", "list"]),
        d.json(&["image", "list"]),
        d.json(&["volume", "list", "default"]),
        d.json(&["vswitch", "list"]),
    );
    let cases: &[(&[&str], &str, &str)] = &[
        (
            &["vm", "create", "a", "--vcpus", "0", "--memory", "128"],
            "vcpus",
            "HTTP 400",
        ),
        (
            &["vm", "create", "a", "--vcpus", "1", "--memory", "4000000"],
            "memory_mib",
            "HTTP 422",
        ),
        (
            &["vm", "create", "taken", "--vcpus", "1", "--memory", "128"],
            "already exists",
            "HTTP 409",
        ),
        (
            &[
                "vm", "create", "a", "--vcpus", "1", "--memory", "128", "--image", "nope",
            ],
            "image",
            "HTTP 422",
        ),
        (
            &[
                "vm", "create", "a", "--vcpus", "1", "--memory", "128", "--nic", "nope",
            ],
            "nics[0].vswitch",
            "HTTP 422",
        ),
        (
            &["vm", "create", "a/b", "--vcpus", "1", "--memory", "128"],
            "name",
            "HTTP 400",
        ),
        (
            &["vm", "create", "..", "--vcpus", "1", "--memory", "128"],
            "name",
            "HTTP 400",
        ),
        (
            &[
                "vm",
                "create",
                "a",
                "--vcpus",
                "1",
                "--memory",
                "128",
                "--disk",
                "nopool:64",
            ],
            "disks[0].pool",
            "HTTP 422",
        ),
        (&["vm", "show", "ghost"], "not found", "HTTP 404"),
    ];
    for (args, field, status) in cases {
        let err = d.fails(args);
        assert!(
            err.contains(field) && err.contains(status),
            "{args:?}: {err}"
        );
    }
    // A malformed image file is refused before anything is written.
    let junk = d.dir.path().join("junk.qcow2");
    let mut bytes = b"QFI\xfb".to_vec();
    bytes.extend(std::iter::repeat_n(0xa5u8, 4096));
    std::fs::write(&junk, &bytes).unwrap();
    let err = d.fails(&["image", "add", "junk", "--path", junk.to_str().unwrap()]);
    assert!(err.contains("path") && err.contains("HTTP 422"), "{err}");
    // A request without a valid token.
    let o = d.cli_with_token("not-the-token", &["vm", "list"]);
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("401"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );

    let after = (
        d.json(&["vm", "list"]),
        d.json(&["image", "list"]),
        d.json(&["volume", "list", "default"]),
        d.json(&["vswitch", "list"]),
    );
    assert_eq!(before, after, "a refused request changed something");
}

#[test]
fn upload_snapshot_clone_uefi_and_cancel() {
    let _s = serial();
    let d = Daemon::start();
    // An upload streamed through the API lands in the library.
    let src =
        nasvisor_plugin_host::testkit::workspace_root().join("target/guest/nasvisor-mini.qcow2");
    let job = d.json(&[
        "image",
        "add",
        "up",
        "--upload",
        src.to_str().unwrap(),
        "--os-variant",
        "busybox",
    ]);
    assert_eq!(job["state"], "succeeded", "{job:#}");
    let images = d.json(&["image", "list"]);
    let up = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "up")
        .expect("uploaded image listed");
    assert_eq!(up["state"], "ready");
    assert_eq!(up["virtual_size_mib"], 64);

    // Volumes: snapshot, write... revert, clone.
    d.json(&["volume", "create", "default", "data", "32"]);
    let snap = d.json(&["snapshot", "create", "default", "data", "s1"]);
    schema_ok(&snap, "Snapshot");
    assert_eq!(
        d.json(&["snapshot", "list", "default", "data"])[0]["name"],
        "s1"
    );
    d.json(&["snapshot", "revert", "default", "data", "s1"]);
    let c = d.json(&["volume", "clone", "default", "data", "data2", "--linked"]);
    schema_ok(&c, "Volume");
    // The source backs a linked clone: it cannot go first.
    let err = d.fails(&["volume", "delete", "default", "data"]);
    assert!(err.contains("HTTP 409") && err.contains("data2"), "{err}");
    d.json(&["volume", "delete", "default", "data2"]);
    d.json(&["snapshot", "delete", "default", "data", "s1"]);
    d.json(&["volume", "delete", "default", "data"]);

    // A UEFI VM boots OVMF.
    d.create_blank_vm("efi", &["--firmware", "uefi"]);
    let vm = d.json(&["vm", "start", "efi"]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    assert_eq!(vm["firmware"], "uefi");
    d.wait_console("efi", "BdsDxe", BOOT);
    d.json(&["vm", "force-off", "efi"]);
    d.json(&["vm", "delete", "efi", "--delete-disks"]);

    // Cancelling an install: the VM is install_failed, its disks are gone.
    let vm = d.json(&[
        "vm", "create", "cx", "--vcpus", "1", "--memory", "128", "--image", "up",
    ]);
    let job = vm["install_job"].as_str().unwrap().to_string();
    let j = d.json(&["job", "cancel", &job]);
    // The install boots a guest for seconds; a cancel right away lands first.
    assert_eq!(j["state"], "cancelled", "{j:#}");
    let vm = d.wait_vm("cx", Duration::from_secs(30), |v| {
        v["state"] == "install_failed"
    });
    assert!(
        vm["state_reason"].as_str().unwrap().contains("cancelled"),
        "{vm:#}"
    );
    assert_eq!(
        d.json(&["volume", "list", "default"]),
        serde_json::json!([])
    );
    assert!(
        d.qemu_pids().iter().all(|p| !alive(*p)),
        "the cancelled install's QEMU still runs"
    );
}

/// A TLS connection to the daemon's admin endpoint, trusting the
/// certificate it generated.
fn admin_tls(d: &Daemon) -> rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let pem = std::fs::read(d.data_dir().join("tls/cert.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = nasvisor_tls::client_config_builder()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = std::net::TcpStream::connect(d.endpoint.trim_start_matches("https://")).unwrap();
    let conn =
        rustls::ClientConnection::new(std::sync::Arc::new(config), "localhost".try_into().unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// `GET /metrics` with the daemon's admin token: the OpenMetrics text.
fn scrape(d: &Daemon) -> String {
    use std::io::{Read, Write};
    let mut tls = admin_tls(d);
    write!(
        tls,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\n\r\n",
        d.token
    )
    .unwrap();
    let mut raw = Vec::new();
    // The server closes after the answer; a TLS close without notify is
    // not an error here.
    let _ = tls.read_to_end(&mut raw);
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("application/openmetrics-text"), "{head}");
    assert!(body.ends_with("# EOF\n"), "{body}");
    body.to_string()
}

/// The value of one series (name and labels exactly) in `text`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn an_upload_that_stops_midway_fails_after_the_body_timeout_and_leaves_nothing_behind() {
    use std::io::{Read, Write};
    let _s = serial();
    let mut setup = common::DaemonSetup::single_host();
    setup.api_extra = vec!["[api.limits]".into(), "body-timeout-ms = 4000".into()];
    let d = Daemon::start_with(setup);
    let images_dir = d.data_dir().join("images");
    let leftovers = || -> Vec<String> {
        std::fs::read_dir(&images_dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains("stalled"))
            .collect()
    };
    // 1 MiB of a real qcow2 image of an announced 64 MiB, then nothing
    // (the connection stays open).
    let image =
        nasvisor_plugin_host::testkit::workspace_root().join("target/guest/nasvisor-mini.qcow2");
    let first = &std::fs::read(image).unwrap()[..1 << 20];
    let mut tls = admin_tls(&d);
    write!(
        tls,
        "POST /api/v1/images/stalled/upload?os_variant=busybox HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: Bearer {}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n\r\n",
        d.token,
        64 << 20
    )
    .unwrap();
    tls.write_all(first).unwrap();
    tls.flush().unwrap();
    let sent = std::time::Instant::now();
    // Midway, the import is under way: a record and a partial file. The
    // server records the import once it has read the head of the body,
    // which may come a moment after the bytes were written: ask until it is
    // listed, for at most 3 s (still before the 4 s body timeout).
    let (images, during) = loop {
        let images = d.json(&["image", "list"]);
        let during = images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == "stalled")
            .cloned();
        if during.is_some() || sent.elapsed() > Duration::from_secs(3) {
            break (images, during);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        during.is_some(),
        "the upload is listed while it runs: {images:#}"
    );
    assert!(!leftovers().is_empty(), "a partial file while it runs");
    assert!(
        sent.elapsed() < Duration::from_secs(4),
        "checked before the timeout"
    );

    // The body timeout ends it: 408, naming the setting.
    tls.get_ref()
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tls.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                answer.extend_from_slice(&buf[..n]);
                if answer.ends_with(b"}") {
                    break;
                }
            }
        }
    }
    let answer = String::from_utf8_lossy(&answer).into_owned();
    eprintln!("after {:?}: {answer}", sent.elapsed());
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("body-timeout-ms"), "{answer}");
    assert!(sent.elapsed() >= Duration::from_millis(3900));

    // Nothing is left: no image record, no partial file; the job failed.
    let images = d.json(&["image", "list"]);
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"] != "stalled"),
        "{images:#}"
    );
    assert_eq!(leftovers(), Vec::<String>::new());
    let jobs = d.json(&["job", "list"]);
    let job = jobs
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["target"] == "image/stalled")
        .expect("the upload's job");
    assert_eq!(job["state"], "failed", "{job:#}");
    assert!(
        job["error"].as_str().unwrap().contains("stopped arriving"),
        "{job:#}"
    );
}

#[test]
fn placement_live_console_guest_panic_and_autostart() {
    let _s = serial();
    let mut d = Daemon::start();
    // First power-on on an explicit host: an unknown one is refused.
    d.create_blank_vm("p2", &[]);
    let err = d.fails(&["vm", "start", "p2", "--host", "nas9"]);
    assert!(err.contains("host") && err.contains("HTTP 422"), "{err}");
    assert_eq!(
        d.json(&["vm", "start", "p2", "--host", "nas1"])["host"],
        "nas1"
    );
    d.json(&["vm", "force-off", "p2"]);

    d.json(&[
        "vm",
        "create",
        "pan",
        "--vcpus",
        "1",
        "--memory",
        "192",
        "--image",
        "nasvisor-mini",
        "--autostart",
    ]);
    let vm = d.wait_vm("pan", BOOT, |v| v["state"] != "installing");
    assert_eq!(vm["state"], "running", "{vm:#}");

    // The live console: what the guest prints streams to `vm console --follow`.
    let mut follow = std::process::Command::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_nasvisord")).with_file_name("nasvisor"),
    )
    .args(["vm", "console", "pan", "--follow"])
    .env("NASVISOR_ENDPOINT", &d.endpoint)
    .env("NASVISOR_TOKEN", &d.token)
    .env("NASVISOR_FINGERPRINT", &d.fingerprint)
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .spawn()
    .unwrap();
    let mut out = follow.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = std::io::Read::read(&mut out, &mut buf) {
            if n == 0 {
                break;
            }
            seen.extend_from_slice(&buf[..n]);
            if String::from_utf8_lossy(&seen).contains("live-42") {
                let _ = tx.send(true);
                return;
            }
        }
        let _ = tx.send(false);
    });
    std::thread::sleep(Duration::from_millis(500));
    d.json(&["vm", "console-send", "-n", "pan", "echo live-$((2*21))"]);
    let got = rx.recv_timeout(Duration::from_secs(30)).unwrap_or(false);
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(got, "the followed console never showed live-42");

    // A guest kernel panic (pvpanic) is recorded as such, with an event.
    d.json(&[
        "vm",
        "console-send",
        "-n",
        "pan",
        "echo c > /proc/sysrq-trigger",
    ]);
    let vm = d.wait_vm("pan", Duration::from_secs(60), |v| {
        v["state"] == "guest_panicked"
    });
    assert!(
        vm["state_reason"].as_str().unwrap().contains("panic"),
        "{vm:#}"
    );
    let events = d.json(&["event", "list"]);
    assert!(
        events
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "vm-guest-panicked"),
        "{events:#}"
    );
    let err = d.fails(&["vm", "start", "pan"]);
    assert!(
        err.contains("force it off") && err.contains("HTTP 409"),
        "{err}"
    );
    d.json(&["vm", "force-off", "pan"]);

    // After a host boot, autostart VMs start with the daemon; others stay off.
    d.stop();
    std::fs::write(d.data_dir().join("boot-id"), "a-previous-boot\n").unwrap();
    d.spawn();
    let vm = d.wait_vm("pan", Duration::from_secs(30), |v| v["state"] == "running");
    assert!(vm["pid"].is_number(), "{vm:#}");
    assert_eq!(d.json(&["vm", "show", "p2"])["state"], "stopped");
    d.json(&["vm", "force-off", "pan"]);
}

#[test]
fn a_host_becomes_a_cluster_with_its_own_ca_and_issues_join_tokens() {
    let _s = serial();
    let mut d = Daemon::start();
    let single = d.json(&["cluster", "status"]);
    schema_ok(&single, "Cluster");
    assert_eq!(single["clustered"], false);
    let err = d.fails(&["cluster", "join-token"]);
    assert!(
        err.contains("HTTP 409") && err.contains("cluster create"),
        "{err}"
    );

    let c = d.json(&["cluster", "create", "--max-members", "5"]);
    schema_ok(&c, "Cluster");
    assert_eq!(c["clustered"], true);
    assert_eq!(c["max_members"], 5);
    assert_eq!(c["leader"], c["this_node"]);
    assert_eq!(c["members"].as_array().unwrap().len(), 1, "{c:#}");
    assert_eq!(c["members"][0]["addr"], c["address"]);
    assert_eq!(c["members"][0]["voter"], true);
    let fingerprint = c["ca_fingerprint"].as_str().unwrap().to_string();
    let err = d.fails(&["cluster", "create"]);
    assert!(err.contains("HTTP 409"), "{err}");
    let t = d.json(&["cluster", "join-token", "--ttl", "600"]);
    schema_ok(&t, "JoinToken");
    assert!(t["token"].as_str().unwrap().len() > 32, "{t:#}");
    let err = d.fails(&["cluster", "join-token", "--ttl", "0"]);
    assert!(err.contains("ttl_s") && err.contains("HTTP 400"), "{err}");
    let err = d.fails(&["cluster", "remove", "1"]);
    assert!(
        err.contains("HTTP 422") && err.contains("this host"),
        "{err}"
    );

    // The existing desired state is kept, and the cluster survives a restart:
    // the host serves its cluster endpoint again, with the same CA.
    d.json(&["vm", "create", "kept", "--vcpus", "1", "--memory", "128"]);
    d.stop();
    d.spawn();
    let c = d.json(&["cluster", "status"]);
    assert_eq!(c["ca_fingerprint"], fingerprint.as_str());
    let addr = c["address"].as_str().unwrap().to_string();
    assert!(
        std::net::TcpStream::connect(&addr).is_ok(),
        "nothing listens on the cluster endpoint {addr} after a restart"
    );
    assert_eq!(d.json(&["vm", "show", "kept"])["name"], "kept");
}

#[test]
fn an_install_whose_disk_exceeds_the_pools_free_space_fails_before_planning() {
    let _s = serial();
    let d = Daemon::start();
    d.json(&[
        "vm",
        "create",
        "huge",
        "--vcpus",
        "1",
        "--memory",
        "128",
        "--image",
        "nasvisor-mini",
        "--disk-size",
        "65536",
    ]);
    let vm = d.wait_vm("huge", Duration::from_secs(60), |v| {
        v["state"] != "installing"
    });
    assert_eq!(vm["state"], "install_failed", "{vm:#}");
    let reason = vm["state_reason"].as_str().unwrap();
    assert!(
        reason.contains("install.disk_size_gib: 65536 GiB does not fit in pool \"default\""),
        "{vm:#}"
    );
    // Nothing was created, and the os-installer was not blamed.
    assert_eq!(
        d.json(&["volume", "list", "default"]),
        serde_json::json!([])
    );
    let events = d.json(&["event", "list"]);
    assert!(
        !events.as_array().unwrap().iter().any(|e| e["kind"]
            .as_str()
            .is_some_and(|k| k.starts_with("plugin-"))
            && e["kind"] != "plugin-installed"),
        "{events:#}"
    );
}

/// `nasvisor ARGS` against `d` with the config file `config` and no token
/// of the daemon's: the remote's token is the one sent. `stdin` is typed in.
fn as_remote(
    d: &Daemon,
    config: &std::path::Path,
    args: &[&str],
    stdin: &str,
) -> std::process::Output {
    let mut c = d.cli_command("", args);
    c.env_remove("NASVISOR_TOKEN")
        .env_remove("NASVISOR_ENDPOINT")
        .env_remove("NASVISOR_FINGERPRINT")
        .env("NASVISOR_CONFIG", config);
    typed(c, stdin)
}

#[test]
fn users_log_in_act_within_their_role_are_audited_and_throttled() {
    let _s = serial();
    let d = Daemon::start();
    let config = d.dir.path().join("cli-config.toml");
    for (user, role) in [("vera", "viewer"), ("otto", "operator")] {
        let o = d.cli_command(
            &d.admin_token(),
            &["user", "create", user, "--role", role, "--password-stdin"],
        );
        let o = typed(o, &format!("{user} long password\n"));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        // Each logs in through the CLI, which stores a new API token.
        let o = as_remote(
            &d,
            &config,
            &[
                "remote",
                "add",
                user,
                &d.endpoint,
                "--fingerprint",
                &d.fingerprint,
                "--user",
                user,
                "--password-stdin",
            ],
            &format!("{user} long password\n"),
        );
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        !text.contains("long password"),
        "a password in the config file"
    );
    d.json(&["vm", "create", "quiet", "--vcpus", "1", "--memory", "128"]);

    // vera reads, but may not stop a VM; otto may (the VM is not running:
    // a conflict, past the role check).
    let o = as_remote(
        &d,
        &config,
        &["--remote", "vera", "--json", "vm", "list"],
        "",
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let o = as_remote(
        &d,
        &config,
        &["--remote", "vera", "vm", "force-off", "quiet"],
        "",
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("HTTP 403") && e.contains("operator"), "{e}");
    let o = as_remote(
        &d,
        &config,
        &["--remote", "otto", "vm", "force-off", "quiet"],
        "",
    );
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!e.contains("HTTP 403") && !e.contains("HTTP 401"), "{e}");
    let o = as_remote(&d, &config, &["--remote", "otto", "user", "list"], "");
    assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 403"));

    // The audit log has who did what and how it ended; reads are not in it.
    // (Entries are written just after the answer: wait for them.)
    let want = [
        ("vera", "login", 200),
        ("vera", "vmPower", 403),
        ("otto", "vmPower", 409),
    ];
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let entries: Vec<(String, String, u64)> = loop {
        let entries: Vec<(String, String, u64)> = d
            .json(&["audit", "list"])
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                (
                    e["user"].as_str().unwrap().to_string(),
                    e["operation"].as_str().unwrap().to_string(),
                    e["status"].as_u64().unwrap(),
                )
            })
            .collect();
        let all = want.iter().all(|w| {
            entries
                .iter()
                .any(|e| e.0 == w.0 && e.1 == w.1 && e.2 == w.2)
        });
        if all {
            break entries;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{want:?} not all in {entries:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        entries
            .iter()
            .all(|e| e.1 != "listVms" && e.1 != "listUsers"),
        "a read was audited: {entries:#?}"
    );

    // Five wrong passwords for vera, then even the right one waits (429).
    let vera_login = |password: &str| {
        let args = [
            "remote",
            "add",
            "again",
            &d.endpoint,
            "--fingerprint",
            &d.fingerprint,
            "--user",
            "vera",
            "--password-stdin",
        ];
        as_remote(&d, &config, &args, &format!("{password}\n"))
    };
    for _ in 0..5 {
        let o = vera_login("not her password");
        assert!(String::from_utf8_lossy(&o.stderr).contains("HTTP 401"));
    }
    let o = vera_login("vera long password");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("HTTP 429") && e.contains("try again in"), "{e}");
    // Her stored token is not affected; disabling her ends it.
    let o = as_remote(&d, &config, &["--remote", "vera", "whoami"], "");
    assert!(o.status.success());
    d.json(&["user", "edit", "vera", "--disable"]);
    let o = as_remote(&d, &config, &["--remote", "vera", "whoami"], "");
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("HTTP 401") && e.contains("disabled"), "{e}");
}

/// The service manager's end of sd_notify: a datagram socket, as
/// systemd's `NOTIFY_SOCKET`, and what the daemon sent to it.
struct Notify {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    rx: std::sync::mpsc::Receiver<(std::time::Instant, String)>,
    seen: Vec<(std::time::Instant, String)>,
}

impl Notify {
    fn new() -> Notify {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = sock.recv(&mut buf) {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                if tx.send((std::time::Instant::now(), msg)).is_err() {
                    break;
                }
            }
        });
        Notify {
            _dir: dir,
            path,
            rx,
            seen: Vec::new(),
        }
    }

    /// The environment systemd gives a unit with `WatchdogSec=` of `usec`.
    fn env(&self, watchdog_usec: u64) -> Vec<(String, String)> {
        vec![
            ("NOTIFY_SOCKET".into(), self.path.display().to_string()),
            ("WATCHDOG_USEC".into(), watchdog_usec.to_string()),
        ]
    }

    /// The next message with the line `want`, within `within`.
    fn next(&mut self, want: &str, within: Duration) -> (std::time::Instant, String) {
        self.next_or_none(want, within)
            .unwrap_or_else(|| panic!("no {want} within {within:?}; seen: {:?}", self.seen))
    }

    fn next_or_none(
        &mut self,
        want: &str,
        within: Duration,
    ) -> Option<(std::time::Instant, String)> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let (at, m) = self.rx.recv_timeout(left).ok()?;
            self.seen.push((at, m.clone()));
            if m.lines().any(|l| l == want) {
                return Some((at, m));
            }
        }
    }
}

#[test]
fn under_systemd_it_says_ready_once_it_serves_feeds_the_watchdog_and_says_stopping() {
    use std::time::Instant;
    let _s = serial();
    // A watchdog of 2 s (`WatchdogSec=2s`).
    let mut notify = Notify::new();
    let mut setup = common::DaemonSetup::single_host();
    setup.env = notify.env(2_000_000);
    let mut d = Daemon::start_with(setup);
    let started = Instant::now();
    // READY=1 once the endpoint serves (the banner was printed before), with
    // the address in its status.
    let (_, ready) = notify.next("READY=1", Duration::from_secs(30));
    let port = d.endpoint.rsplit(':').next().unwrap().trim_end_matches('/');
    assert!(
        ready.contains(&format!("STATUS=serving on 127.0.0.1:{port}")),
        "{ready:?} (endpoint {})",
        d.endpoint
    );
    let out = d.cli(&["host"]);
    assert!(out.status.success(), "the daemon answers once ready");
    // The watchdog is fed every half timeout while the daemon works.
    let from = Instant::now();
    let mut pings = Vec::new();
    while from.elapsed() < Duration::from_secs(6) {
        pings.push(notify.next("WATCHDOG=1", Duration::from_secs(3)).0);
    }
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(pings.len() >= 5, "{} pings in 6 s: {gaps:?}", pings.len());
    assert!(
        gaps.iter().all(|g| *g < Duration::from_millis(1800)),
        "a gap near the 2 s timeout: {gaps:?}"
    );
    // A stop says so before the daemon exits.
    d.stop();
    notify.next("STOPPING=1", Duration::from_secs(10));
    eprintln!(
        "ready and {} keep-alives in {:.1} s; gaps {gaps:?}",
        pings.len(),
        started.elapsed().as_secs_f64()
    );
}

#[test]
fn a_daemon_whose_store_stops_answering_stops_feeding_systemds_watchdog_until_it_answers() {
    use std::time::Instant;
    let _s = serial();
    // A watchdog of 2 s: keep-alives every second, while no write to the
    // store has been running for a second.
    let mut notify = Notify::new();
    let mut setup = common::DaemonSetup::single_host();
    setup.env = notify.env(2_000_000);
    let mut d = Daemon::start_with(setup);
    notify.next("READY=1", Duration::from_secs(30));
    // The store's directory moved onto a disk that can stop answering.
    d.stop();
    let store = common::HungDir::mount(None, d.data_dir().join("cluster"), true);
    d.spawn();
    notify.next("READY=1", Duration::from_secs(30));
    for _ in 0..2 {
        notify.next("WATCHDOG=1", Duration::from_secs(3));
    }
    // The disk hangs; an administrator's change is written to the store
    // (it waits for the disk). Reads go on being answered from memory.
    store.hang();
    let hung_at = Instant::now();
    std::thread::scope(|scope| {
        let writer = scope.spawn(|| d.cli(&["host", "degrade", "nas1", "--reason", "maintenance"]));
        // The keep-alives stop: none for 3 s (three periods) within the
        // next 10 s.
        let mut last = hung_at;
        let stopped = loop {
            match notify.next_or_none("WATCHDOG=1", Duration::from_secs(3)) {
                None => break Some(last.duration_since(hung_at)),
                Some((at, _)) => last = at,
            }
            if hung_at.elapsed() > Duration::from_secs(10) {
                break None;
            }
        };
        let stopped = stopped.unwrap_or_else(|| {
            store.answer();
            panic!(
                "still fed 10 s after the store's disk hung: {:?}",
                notify.seen
            )
        });
        let log = std::fs::read_to_string(d.log_path()).unwrap_or_default();
        assert!(
            log.lines()
                .any(|l| l.contains("not feeding systemd's watchdog")
                    && l.contains("a write to the store has not returned for")),
            "the daemon does not say why it stopped feeding the watchdog:\n{log}"
        );
        // The disk answers again: the write returns, the keep-alives come
        // back.
        store.answer();
        let answered_at = Instant::now();
        let back = notify.next("WATCHDOG=1", Duration::from_secs(5)).0;
        let out = writer.join().unwrap();
        assert!(
            out.status.success(),
            "the change that waited for the disk: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!(
            "last keep-alive {:.1} s after the disk hung, back {:.1} s after it answered",
            stopped.as_secs_f64(),
            back.duration_since(answered_at).as_secs_f64(),
        );
    });
    // Fed at the normal pace again.
    let a = notify.next("WATCHDOG=1", Duration::from_secs(3)).0;
    let b = notify.next("WATCHDOG=1", Duration::from_secs(3)).0;
    assert!(b - a < Duration::from_millis(1800), "{:?}", b - a);
    d.stop();
    drop(store);
}

#[test]
fn site_settings_are_checked_before_they_are_written_and_a_restart_in_place_applies_them() {
    let _s = serial();
    let sites = tempfile::tempdir().unwrap();
    let site = sites.path().join("site.toml");
    let mut setup = common::DaemonSetup::single_host();
    setup.top_extra = vec![format!("site-config = \"{}\"", site.display())];
    let mut d = Daemon::start_with(setup);
    let pid = d.pid();
    let free = |d: &Daemon| {
        d.json(&["host"])["free_memory_mib"]
            .as_u64()
            .expect("free memory")
    };
    let before = free(&d);

    // Named, not there yet: the image's settings alone.
    let v = d.json(&["host", "settings"]);
    assert_eq!(v["path"], site.display().to_string(), "{v:#}");
    assert_eq!(v["running"], "absent", "{v:#}");
    assert_eq!(v["text"], Value::Null, "{v:#}");
    assert_eq!(v["restart_needed"], false, "{v:#}");

    // What the next start would ignore is refused, naming the key, and no
    // file is written.
    let file = sites.path().join("new.toml");
    for (text, want) in [
        (
            "data-dir = \"/tmp/elsewhere\"\n",
            "data-dir: set by the firmware image",
        ),
        ("[plugins]\ndir = \"/tmp\"\n", "plugins.dir"),
        (
            "[cluster]\nheartbeat-interval-ms = 5\n",
            "cluster.heartbeat-interval-ms",
        ),
        ("[vm]\nreserved-memory-mb = 1\n", "reserved-memory-mb"),
        ("[vm\n", "site.toml"),
    ] {
        std::fs::write(&file, text).unwrap();
        let err = d.fails(&["host", "settings", "set", file.to_str().unwrap()]);
        assert!(err.contains(want) && err.contains("text"), "{text}: {err}");
        assert!(!site.exists(), "{text}: a refused file was written");
    }

    // A good file is written; it applies at the next start.
    std::fs::write(&file, "[vm]\nreserved-memory-mib = 1536\n").unwrap();
    let v = d.json(&["host", "settings", "set", file.to_str().unwrap()]);
    assert_eq!(
        v["keys"],
        serde_json::json!(["vm.reserved-memory-mib"]),
        "{v:#}"
    );
    assert_eq!(v["restart_needed"], true, "{v:#}");
    assert_eq!(v["restarting"], false, "{v:#}");
    assert_eq!(
        std::fs::read_to_string(&site).unwrap(),
        "[vm]\nreserved-memory-mib = 1536\n"
    );
    assert_eq!(free(&d), before, "not applied before a restart");
    let out = d.cli(&["host", "settings"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("keys:            vm.reserved-memory-mib")
            && text.contains("restart needed:  yes")
            && text.contains("reserved-memory-mib = 1536"),
        "{text}"
    );
    let events = d.json(&["event", "list"]);
    assert!(
        common::events_of_kind(&events, "host-settings-changed")
            .iter()
            .any(|e| e["message"]
                .as_str()
                .is_some_and(|m| m.contains("vm.reserved-memory-mib") && m.contains("next start"))),
        "{events:#}"
    );

    // --restart applies it at once: the same process starts again in
    // place with the file laid over the image's settings.
    let set_with_restart = |d: &Daemon| {
        let v = d.json(&[
            "host",
            "settings",
            "set",
            file.to_str().unwrap(),
            "--restart",
        ]);
        assert_eq!(v["restarting"], true, "{v:#}");
    };
    set_with_restart(&d);
    d.wait_restart(Duration::from_secs(60));
    assert_eq!(d.pid(), pid);
    let v = d.json(&["host", "settings"]);
    assert_eq!(v["running"], "applied", "{v:#}");
    assert_eq!(
        v["running_keys"],
        serde_json::json!(["vm.reserved-memory-mib"]),
        "{v:#}"
    );
    assert_eq!(v["restart_needed"], false, "{v:#}");
    assert_eq!(
        free(&d),
        before - 1024,
        "512 MiB reserved by default, 1536 now"
    );

    // Cleared: the image's settings again, at once with --restart.
    let v = d.json(&["host", "settings", "clear", "--restart"]);
    assert_eq!(v["restarting"], true, "{v:#}");
    assert!(!site.exists());
    d.wait_restart(Duration::from_secs(60));
    let v = d.json(&["host", "settings"]);
    assert_eq!(v["running"], "absent", "{v:#}");
    assert_eq!(free(&d), before);
    // Nothing to apply: no restart.
    let v = d.json(&["host", "settings", "clear", "--restart"]);
    assert_eq!(v["restarting"], false, "{v:#}");

    // Settings that parse but keep the daemon from serving (its address is
    // taken) are put back at the next start: the start with them fails,
    // the one after it (systemd's Restart=on-failure) runs on the previous
    // ones and says so.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    std::fs::write(&file, format!("[api]\nlisten = \"127.0.0.1:{port}\"\n")).unwrap();
    set_with_restart(&d);
    let t = std::time::Instant::now();
    while !d.exited() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the daemon on a taken address did not exit"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(site.exists(), "the file stays until a start puts it back");
    d.spawn();
    let v = d.json(&["host", "settings"]);
    assert_eq!(v["running"], "absent", "{v:#}");
    assert!(
        v["rolled_back"]
            .as_str()
            .is_some_and(|r| r.contains("did not get to serve") && r.contains("image's settings")),
        "{v:#}"
    );
    assert!(!site.exists());
    let events = d.json(&["event", "list"]);
    assert_eq!(
        common::events_of_kind(&events, "host-settings-rolled-back").len(),
        1,
        "{events:#}"
    );
    drop(taken);
}
