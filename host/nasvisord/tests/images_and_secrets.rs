//! Through a running `nasvisord`: images that reference files of the host
//! are refused by every entry point and leave nothing; secrets never reach
//! the log (at TRACE) and everything the daemon writes is private, also
//! after a restart over files an older release left readable.

mod common;

use common::Daemon;
use sha2::Digest;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// The tests boot guests under TCG on a small machine: one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A password hash and an SSH key: their distinctive parts must never be
/// logged.
const HASH: &str =
    "$6$nvsalt42$S3cr3tH4shOfTheAdminUserThatMustNeverBeLogged0123456789abcdefghijklmnopqrstuvwxyzABCDE";
const HASH_PART: &str = "S3cr3tH4shOfTheAdminUser";
/// `ssh-ed25519` with the 32 bytes `NasvisorKeyThatMustNeverBeLogged`.
const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIE5hc3Zpc29yS2V5VGhhdE11c3ROZXZlckJlTG9nZ2Vk admin@test";
const KEY_PART: &str = "IE5hc3Zpc29yS2V5VGhhdE11c3ROZXZlckJlTG9nZ2Vk";

fn qemu_img(args: &[&str]) {
    let o = Command::new("qemu-img").args(args).output().unwrap();
    assert!(
        o.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A qcow2 image whose external data file is `target`.
fn qcow2_data_file(dir: &Path, target: &Path) -> PathBuf {
    let p = dir.join("evil.qcow2");
    let scratch = dir.join("scratch.raw");
    let opt = format!("data_file={},data_file_raw=on", s(&scratch));
    qemu_img(&["create", "-q", "-f", "qcow2", "-o", &opt, s(&p), "1M"]);
    qemu_img(&[
        "amend",
        "-f",
        "qcow2",
        "-o",
        &format!("data_file={}", s(target)),
        s(&p),
    ]);
    p
}

/// Entries under `dir` whose names start with `prefix`.
fn named(dir: &Path, prefix: &str) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix) || n.starts_with(".incoming"))
                .collect()
        })
        .unwrap_or_default()
}

/// Serves `body` to one HTTP request on 127.0.0.1; its URL.
fn serve_once(body: Vec<u8>) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/evil.qcow2", l.local_addr().unwrap());
    std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        let mut head = Vec::new();
        let mut b = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut b).unwrap();
            assert!(n > 0, "the request ended early");
            head.extend_from_slice(&b[..n]);
        }
        let h = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        s.write_all(h.as_bytes()).unwrap();
        s.write_all(&body).unwrap();
    });
    url
}

#[test]
fn images_that_reference_host_files_are_refused_by_every_entry_point_and_leave_nothing() {
    let _s = serial();
    let d = Daemon::start();
    let host_files = tempfile::tempdir().unwrap();
    let secret = host_files.path().join("shadow");
    std::fs::write(&secret, vec![b'S'; 1 << 20]).unwrap();
    let evil = qcow2_data_file(host_files.path(), &secret);
    let flat = host_files.path().join("flat.vmdk");
    std::fs::write(
        &flat,
        format!(
            "# Disk DescriptorFile\nversion=1\nCID=1\nparentCID=ffffffff\n\
             createType=\"monolithicFlat\"\nRW 2048 FLAT \"{}\" 0\n",
            s(&secret)
        ),
    )
    .unwrap();

    // An upload: refused once received, with the reason.
    let err = d.fails(&["image", "add", "evil", "--upload", s(&evil)]);
    assert!(err.contains("external data file"), "{err}");
    // A file of the host: refused before any job starts.
    let err = d.fails(&["image", "add", "evil", "--path", s(&evil)]);
    assert!(
        err.contains("HTTP 422") && err.contains("path:") && err.contains("external data file"),
        "{err}"
    );
    let err = d.fails(&["image", "add", "evil", "--path", s(&flat)]);
    assert!(err.contains("VMDK descriptor file"), "{err}");
    // A volume import.
    let err = d.fails(&["volume", "import", "default", "evil", s(&evil)]);
    assert!(
        err.contains("HTTP 422") && err.contains("path:") && err.contains("external data file"),
        "{err}"
    );
    // A plain http URL without a checksum.
    let err = d.fails(&[
        "image",
        "add",
        "evil",
        "--url",
        "http://127.0.0.1:9/evil.qcow2",
    ]);
    assert!(
        err.contains("sha256") && err.contains("plain http://"),
        "{err}"
    );
    // A URL with its checksum: the daemon's downloader fetches the bytes,
    // which are then refused like an upload.
    let bytes = std::fs::read(&evil).unwrap();
    let sha = hex::encode(sha2::Sha256::digest(&bytes));
    let url = serve_once(bytes);
    let err = d.fails(&[
        "image", "add", "evil", "--url", &url, "--sha256", &sha, "--wait",
    ]);
    assert!(err.contains("external data file"), "{err}");

    // Nothing left: no image, no record, no volume, no file.
    let images = d.json(&["image", "list"]);
    assert!(
        images
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["name"] != "evil"),
        "{images:#}"
    );
    assert_eq!(
        d.json(&["volume", "list", "default"]),
        serde_json::json!([])
    );
    assert!(named(&d.data_dir().join("images"), "evil").is_empty());
    assert!(named(&d.data_dir().join("pools/default"), "evil").is_empty());
    assert_eq!(std::fs::read(&secret).unwrap(), vec![b'S'; 1 << 20]);
}

/// Every entry under `dir` (not following symlinks) that group or others
/// can reach.
fn open_to_others(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let m = std::fs::symlink_metadata(e.path()).unwrap();
            if m.file_type().is_symlink() {
                continue;
            }
            let mode = m.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                out.push(format!("{} {:o}", e.path().display(), mode));
            }
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn secrets_never_reach_the_trace_log_and_everything_written_is_private() {
    let _s = serial();
    let mut d = Daemon::start_logging("trace");
    let vm = d.json(&[
        "vm",
        "create",
        "web1",
        "--vcpus",
        "1",
        "--memory",
        "256",
        "--image",
        "nasvisor-mini",
        "--hostname",
        "web-one",
        "--user",
        "admin",
        "--sudo",
        "--ssh-key",
        KEY,
        "--password-hash",
        HASH,
        "--wait",
    ]);
    assert_eq!(vm["state"], "running", "{vm:#}");
    let console = d.wait_console("web1", "NASVISOR-READY", Duration::from_secs(120));
    assert!(console.contains("NASVISOR-USER admin"), "{console}");
    assert!(
        console.contains("keys=1") && console.contains("password=1"),
        "the guest got the secrets: {console}"
    );

    // The whole TRACE log: not a trace of the hash or the key.
    let log = std::fs::read_to_string(d.log_path()).unwrap();
    assert!(
        log.len() > 10_000,
        "a TRACE log was written ({} bytes)",
        log.len()
    );
    assert!(log.contains("install planned"), "the install was logged");
    for (what, part) in [("password hash", HASH_PART), ("SSH key", KEY_PART)] {
        if let Some(i) = log.find(part) {
            let line = log[..i].rfind('\n').map_or(0, |n| n + 1);
            let end = log[i..].find('\n').map_or(log.len(), |n| i + n);
            panic!("the {what} is in the log: {}", &log[line..end]);
        }
    }

    // On disk: the journal (it holds the request), the seed volume, the
    // disks, the console log, the store, the keys: nothing another user
    // can open.
    let data = d.data_dir();
    let journal = data.join("journal/decisions.jsonl");
    let journal_text = std::fs::read_to_string(&journal).unwrap();
    assert!(
        journal_text.contains(HASH_PART),
        "the journal holds the request"
    );
    assert_eq!(mode(&journal), 0o600);
    assert_eq!(mode(&data), 0o700);
    let id = vm["id"].as_str().unwrap();
    let console_log = data.join(format!("run/{id}.console.log"));
    assert_eq!(mode(&console_log), 0o600);
    assert_eq!(mode(&data.join("pools/default/web1-seed.qcow2")), 0o600);
    assert_eq!(mode(&data.join("pools/default/web1-root.qcow2")), 0o600);
    assert!(
        !data.join(format!("run/{id}.cidata.img")).exists(),
        "the seed's temporary image is gone"
    );
    let open = open_to_others(&data);
    assert!(open.is_empty(), "readable by others: {open:#?}");

    // A data directory an older release left readable is made private at
    // start-up.
    d.json(&["vm", "force-off", "web1"]);
    d.stop();
    for p in [
        journal.clone(),
        console_log.clone(),
        data.join("pools/default/web1-root.qcow2"),
        data.join("tls/key.pem"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    for p in [
        data.clone(),
        data.join("pools/default"),
        data.join("journal"),
    ] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    assert!(!open_to_others(&data).is_empty());
    d.spawn();
    let open = open_to_others(&data);
    assert!(
        open.is_empty(),
        "still readable after the restart: {open:#?}"
    );
    d.json(&["vm", "delete", "web1", "--delete-disks"]);
}
