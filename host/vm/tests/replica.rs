//! Synchronous disk replicas against real QEMUs under TCG on loopback: the
//! passive host's replica server (`qemu-storage-daemon`), and the active
//! host's replicated disk (a quorum of the local image and the replica)
//! with its link brought in step, lost and dropped. The Linux guest's
//! acknowledged writer (`/lib/nasvisor/acker`) shows what the guest saw
//! complete.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use nasvisor_faults::HungMount;
use nasvisor_vm::migration::{tls_client, MirrorSet, MirrorTarget};
use nasvisor_vm::qmp::{InetAddr, RunState};
use nasvisor_vm::replica::link::{self, LinkState};
use nasvisor_vm::replica::{ReplicaDisk, ReplicaServer, ReplicaTls};
use nasvisor_vm::{DiskSpec, EventKind, VmSpec, VmState};

/// The replicated disk `data` (node `node`) of a VM on `active`, and its
/// replica, an empty image of the same size on `passive`, served there.
async fn serve_replica(
    passive: &TestDir,
    node: &str,
    size: &str,
    tls: Option<&ReplicaTls>,
) -> (ReplicaServer, std::path::PathBuf, MirrorTarget) {
    serve_replicas(passive, &[node], size, tls).await
}

/// [`serve_replica`] of the first of `nodes`, the server exporting an empty
/// image for each of them.
async fn serve_replicas(
    passive: &TestDir,
    nodes: &[&str],
    size: &str,
    tls: Option<&ReplicaTls>,
) -> (ReplicaServer, std::path::PathBuf, MirrorTarget) {
    serve_replicas_in(passive, passive.path(), nodes, size, tls).await
}

/// [`serve_replicas`] with the images in directory `images` (the server's
/// files stay in `passive`).
async fn serve_replicas_in(
    passive: &TestDir,
    images: &Path,
    nodes: &[&str],
    size: &str,
    tls: Option<&ReplicaTls>,
) -> (ReplicaServer, std::path::PathBuf, MirrorTarget) {
    let node = nodes[0];
    let disks: Vec<ReplicaDisk> = nodes
        .iter()
        .map(|n| {
            let path = images.join(format!("{n}-replica.qcow2"));
            qcow2(&path, size);
            ReplicaDisk {
                node: n.to_string(),
                path,
            }
        })
        .collect();
    let replica = disks[0].path.clone();
    let addr = InetAddr::new("127.0.0.1", free_port());
    let server = ReplicaServer::start(
        Path::new("qemu-storage-daemon"),
        passive.path(),
        "protected",
        &disks,
        &addr,
        tls,
    )
    .await
    .unwrap();
    let target = MirrorTarget {
        node: node.into(),
        addr,
        export: node.into(),
    };
    (server, replica, target)
}

/// Attaches `target`'s replica to its disk of `vm`.
async fn attach(
    vm: &nasvisor_vm::VmInstance,
    target: &MirrorTarget,
    tls: Option<&nasvisor_vm::qmp::TlsClient>,
) -> Result<link::Sockets, link::LinkError> {
    attach_with(vm, target, tls, |_| {}).await
}

/// [`attach`], with `progress` hearing how far the sync is.
async fn attach_with(
    vm: &nasvisor_vm::VmInstance,
    target: &MirrorTarget,
    tls: Option<&nasvisor_vm::qmp::TlsClient>,
    progress: impl FnMut(nasvisor_vm::migration::MirrorProgress),
) -> Result<link::Sockets, link::LinkError> {
    let targets = std::slice::from_ref(target);
    link::attach(vm.qmp(), targets, tls, std::future::pending(), progress).await
}

/// Writes through the guest's device (HMP `qemu-io` on the device's block
/// backend). QEMU prints `qemu-io`'s report (and a failed write's error) to
/// its own output, not to the monitor, so nothing here tells whether the
/// write succeeded: a test checks the written data in the images instead.
async fn device_write(vm: &nasvisor_vm::VmInstance, dev: &str, op: &str) {
    vm.qmp()
        .human_monitor_command(&format!(
            "qemu-io -d /machine/peripheral/{dev}/virtio-backend \"{op}\""
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_replica_holds_every_completed_write_when_the_active_host_dies() {
    let active = TestDir::new();
    let passive = TestDir::new();
    // The VM's data disk, with content, replicated.
    let data = active.file("data.qcow2");
    qcow2(&data, "32M");
    qemu_io(&data, &["write -P 0x5a 0 4M"]);
    let mut spec = active.guest_spec("protected", GuestMode::Idle);
    spec.disks.push(DiskSpec {
        replicated: true,
        ..DiskSpec::qcow2(&data)
    });
    let vm = active.launch(&spec).await;
    assert_eq!(
        link::state(vm.qmp(), "disk1").await.unwrap(),
        LinkState::Alone
    );
    // The boot disk was not asked to be replicated.
    let e = link::state(vm.qmp(), "disk0").await.unwrap_err();
    assert!(e.to_string().contains("disk0 is not replicated"), "{e}");

    // The passive host serves the replica over TLS, admitting only node-1.
    let certs = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = test_certificates(certs.path());
    let tls = ReplicaTls {
        dir: server_dir,
        client_identity: "CN=node-1,O=nasvisor".into(),
    };
    let (server, replica, target) = serve_replica(&passive, "disk1", "32M", Some(&tls)).await;
    // Found again by its pidfile, as after a restart of nasvisord.
    let again = ReplicaServer::attach(passive.path(), "protected");
    assert_eq!(
        again.await.map(|s| s.pid()).ok(),
        None,
        "its QMP has one client"
    );

    let ct = tls_client(vm.qmp(), "cli", &client_dir, "node-2")
        .await
        .unwrap();
    let mut seen = Vec::new();
    attach_with(&vm, &target, Some(&ct), |p| seen.push(p))
        .await
        .unwrap();
    assert!(seen.last().is_some_and(|p| p.done >= 4 << 20), "{seen:?}");
    assert_eq!(
        link::state(vm.qmp(), "disk1").await.unwrap(),
        LinkState::Replicated
    );
    assert_eq!(vm.state(), VmState::Running, "the swap's pause is over");
    let again = attach(&vm, &target, Some(&ct)).await.unwrap_err();
    assert!(
        again.to_string().contains("already has its replica"),
        "{again}"
    );

    // A write through the guest's device completes; the active host dies at
    // once. The replica has it, and what was there before.
    device_write(&vm, "disk1-dev", "write -P 0xa5 8M 256k").await;
    let pid = vm.pid();
    // SAFETY: kill(2) of the QEMU this test launched, by its own pid.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
    }
    server.stop().await.unwrap();
    let check = qemu_io(&replica, &["read -P 0x5a 0 4M", "read -P 0xa5 8M 256k"]);
    assert!(!check.contains("Pattern verification failed"), "{check}");
    assert_eq!(check.matches("read ").count(), 2, "{check}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attach_that_fails_leaves_the_disk_working_alone_with_no_node_behind() {
    let active = TestDir::new();
    let data = active.file("data.qcow2");
    qcow2(&data, "16M");
    let mut spec = active.guest_spec("protected", GuestMode::Idle);
    spec.disks.push(DiskSpec {
        replicated: true,
        ..DiskSpec::qcow2(&data)
    });
    let vm = active.launch(&spec).await;
    // Nobody serves this port.
    let target = MirrorTarget {
        node: "disk1".into(),
        addr: InetAddr::new("127.0.0.1", free_port()),
        export: "disk1".into(),
    };
    let e = attach(&vm, &target, None).await.unwrap_err();
    assert!(e.to_string().contains("disk1"), "{e}");
    assert_eq!(
        link::state(vm.qmp(), "disk1").await.unwrap(),
        LinkState::Alone
    );
    let nodes = vm.qmp().query_named_block_nodes().await.unwrap();
    assert!(
        !nodes.iter().any(|n| n.node_name.starts_with("rep-")),
        "{nodes:?}"
    );
    assert!(vm.qmp().query_block_jobs().await.unwrap().is_empty());
    // The disk takes writes alone.
    device_write(&vm, "disk1-dev", "write -P 0x11 0 64k").await;
    assert_eq!(vm.state(), VmState::Running);
    vm.force_off().await.unwrap();
    let check = qemu_io(&data, &["read -P 0x11 0 64k"]);
    assert!(!check.contains("Pattern verification failed"), "{check}");
    assert_eq!(check.matches("read ").count(), 1, "{check}");
}

/// The `n` of every "<prefix>n" line in `log`.
fn numbers(log: &[u8], prefix: &str) -> Vec<u64> {
    String::from_utf8_lossy(log)
        .split(prefix)
        .skip(1)
        .filter_map(|rest| {
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            // Only whole lines: the console may be in the middle of one.
            rest[digits.len()..]
                .starts_with(['\r', '\n'])
                .then(|| digits.parse().ok())
                .flatten()
        })
        .collect()
}

/// The acker's records found in `image` (qcow2, `size` bytes): the `n` of
/// every "REC n" sector of its region (the last 32 MiB), in order.
fn records(image: &Path, size: u64) -> Vec<u64> {
    let raw = image.with_extension("raw");
    let out = std::process::Command::new("qemu-img")
        .args(["convert", "-U", "-f", "qcow2", "-O", "raw"])
        .arg(image)
        .arg(&raw)
        .output()
        .expect("qemu-img runs");
    assert!(out.status.success(), "{out:?}");
    let bytes = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    assert_eq!(bytes.len() as u64, size);
    let base = (size - (32 << 20)) as usize;
    bytes[base..]
        .chunks(512)
        .map_while(|s| {
            let line = String::from_utf8_lossy(s);
            line.strip_prefix("REC ")?.trim_end().parse().ok()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_holds_the_guest_with_no_acknowledged_write_missing_from_it_until_detached()
{
    let Some(kernel) = guest_kernel("console=ttyS0 panic=-1") else {
        return;
    };
    const SIZE: u64 = 64 << 20;
    let active = TestDir::new();
    let passive = TestDir::new();
    let data = active.file("data.qcow2");
    qcow2(&data, "64M");
    let vm = launch_acked(&active, kernel, &data).await;
    let console = vm.console().unwrap();

    // The guest's acknowledged writer: a synced record every 20 ms, "ACK n"
    // on the console once the write completed.
    start_acker(console, 1).await;
    // The replica is brought in step while the guest writes.
    let (server, replica, target) = serve_replica(&passive, "disk0", "64M", None).await;
    attach(&vm, &target, None).await.unwrap();
    let log = console.read_log().await.unwrap();
    let at_attach = *numbers(&log, "ACK ")
        .last()
        .expect("acks before the attach");
    more_acks(console, 25).await;

    // The passive host dies. The guest's next write fails on the replica,
    // and the guest is held on it.
    let mut events = vm.qmp().events();
    // SAFETY: kill(2) of the replica server this test started, by its pid.
    unsafe {
        libc::kill(server.pid(), libc::SIGKILL);
    }
    held(&mut events, Duration::from_secs(30)).await;
    let status = vm.qmp().query_status().await.unwrap();
    assert_eq!(status.status, RunState::IoError, "{status:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let log = console.read_log().await.unwrap();
    let acked = *numbers(&log, "ACK ").last().unwrap();
    assert!(
        acked >= at_attach + 25,
        "acked {acked}, at the attach {at_attach}"
    );

    // Every record the guest saw acknowledged is on the replica.
    let on_replica = records(&replica, SIZE);
    let want: Vec<u64> = (0..=acked).collect();
    assert!(
        on_replica.len() > acked as usize,
        "acknowledged up to {acked}, the replica holds {} records",
        on_replica.len()
    );
    assert_eq!(&on_replica[..want.len()], &want[..]);

    // Dropped (after the caller recorded it outdated), the guest goes on
    // alone.
    link::detach(vm.qmp(), &["disk0".to_string()])
        .await
        .unwrap();
    assert_eq!(
        link::state(vm.qmp(), "disk0").await.unwrap(),
        LinkState::Alone
    );
    vm.qmp().cont().await.unwrap();
    let want = format!("ACK {}\r\n", acked + 20);
    console
        .wait_for_output(want.as_bytes(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|l| panic!("the guest did not go on: {}", String::from_utf8_lossy(&l)));
    assert!(
        !String::from_utf8_lossy(&console.read_log().await.unwrap()).contains("ACKER-WRITE-FAILED"),
        "the held write was retried, not failed to the guest"
    );
    vm.force_off().await.unwrap();
    let local = records(&data, SIZE);
    assert!(local.len() as u64 > acked + 20, "{}", local.len());
    assert!(local.iter().enumerate().all(|(i, n)| *n == i as u64));
    // The replica has nothing written after it was dropped.
    assert!((records(&replica, SIZE).len() as u64) < acked + 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_dead_daemons_attach_or_resume_left_in_qemu_does_not_stop_the_next() {
    use nasvisor_vm::qmp::{BlockdevBitmapBackup, BlockdevOptions, NbdNode};
    use nasvisor_vm::replica::resync;
    let active = TestDir::new();
    let passive = TestDir::new();
    let data = active.file("data.qcow2");
    qcow2(&data, "32M");
    qemu_io(&data, &["write -P 0x5a 0 8M"]);
    let mut spec = active.guest_spec("protected", GuestMode::Idle);
    spec.disks.push(DiskSpec {
        replicated: true,
        ..DiskSpec::qcow2(&data)
    });
    let vm = active.launch(&spec).await;
    let (server, replica, target) = serve_replica(&passive, "disk1", "32M", None).await;
    let qmp = vm.qmp();
    let jobs = || async {
        qmp.query_block_jobs()
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.device)
            .collect::<Vec<_>>()
    };

    // A daemon died in the middle of an attach: its mirror runs on in QEMU,
    // with its NBD node.
    let mut mirrors = MirrorSet::replicas(qmp);
    mirrors.add(&target, None).await.unwrap();
    drop(mirrors);
    assert_eq!(jobs().await, ["rep-disk1"]);
    let sockets = attach(&vm, &target, None).await.unwrap();
    assert_eq!(
        link::state(qmp, "disk1").await.unwrap(),
        LinkState::Replicated
    );
    assert!(jobs().await.is_empty());

    // Lost, then a daemon died in the middle of a resume: its round's job
    // (concluded or not, never dismissed) and its NBD node are left.
    sockets.cut();
    let nodes = ["disk1".to_string()];
    resync::detach_tracking(qmp, &nodes).await.unwrap();
    device_write(&vm, "disk1-dev", "write -P 0x77 16M 4M").await;
    qmp.blockdev_add(&BlockdevOptions::Nbd(NbdNode::new(
        "rep-disk1",
        target.addr.clone(),
        "disk1",
        None,
    )))
    .await
    .unwrap();
    qmp.blockdev_bitmap_backup(&BlockdevBitmapBackup::new(
        "rep-disk1",
        "disk1",
        "rep-disk1",
        resync::CHANGES,
    ))
    .await
    .unwrap();
    assert_eq!(jobs().await, ["rep-disk1"]);
    let done = resync::resume(
        qmp,
        std::slice::from_ref(&target),
        None,
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    assert!(done.copied < 8 << 20, "{done:?}");
    assert_eq!(
        link::state(qmp, "disk1").await.unwrap(),
        LinkState::Replicated
    );
    assert!(jobs().await.is_empty());
    identical_once_stopped(vm, server, &data, &replica).await;
}

/// A TCP relay on loopback in front of a replica server: the link between
/// the two hosts, which the test cuts (every connection through it ends at
/// once, as when a switch port fails) while the server runs on.
struct Relay {
    addr: InetAddr,
    cut: tokio::sync::watch::Sender<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    fn start(upstream: InetAddr) -> Relay {
        let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = InetAddr::new("127.0.0.1", listener.local_addr().unwrap().port());
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let cuts = cut.clone();
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut down, _)) = listener.accept().await {
                let mut cut = cuts.subscribe();
                let to = (upstream.host.clone(), upstream.port);
                tokio::spawn(async move {
                    let Ok(mut up) = tokio::net::TcpStream::connect(to).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut down, &mut up) => {}
                        _ = cut.changed() => {}
                    }
                });
            }
        });
        Relay { addr, cut, task }
    }

    /// Ends every connection through the relay (new ones still pass).
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_lost_to_a_cut_link_resumes_from_the_writes_it_missed_and_ends_identical() {
    use nasvisor_vm::replica::resync;
    let Some(kernel) = guest_kernel("console=ttyS0 panic=-1") else {
        return;
    };
    const SIZE: u64 = 64 << 20;
    let active = TestDir::new();
    let passive = TestDir::new();
    let data = active.file("data.qcow2");
    qcow2(&data, "64M");
    // Content from before the replica existed: a full copy carries it, a
    // resume must not.
    qemu_io(&data, &["write -P 0x5a 0 16M"]);
    let vm = launch_acked(&active, kernel, &data).await;
    let console = vm.console().unwrap();
    let nodes = ["disk0".to_string()];

    // The replica is served behind the relay and brought in step in full.
    let (server, replica, direct) = serve_replica(&passive, "disk0", "64M", None).await;
    let relay = Relay::start(direct.addr.clone());
    let target = MirrorTarget {
        addr: relay.addr.clone(),
        ..direct
    };
    attach(&vm, &target, None).await.unwrap();
    // Nothing was missed, so there is nothing to resume from.
    let e = resync::resume(
        vm.qmp(),
        std::slice::from_ref(&target),
        None,
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("already has its replica"), "{e}");

    // The guest's acknowledged writer runs.
    start_acker(console, 20).await;

    // The link is cut; the server runs on. The guest is held on its write.
    let mut events = vm.qmp().events();
    relay.cut();
    held(&mut events, Duration::from_secs(30)).await;
    // Detached with a record of what the replica misses; the guest goes on.
    resync::detach_tracking(vm.qmp(), &nodes).await.unwrap();
    assert_eq!(
        link::state(vm.qmp(), "disk0").await.unwrap(),
        LinkState::Alone
    );
    vm.qmp().cont().await.unwrap();
    let acked = *numbers(&console.read_log().await.unwrap(), "ACK ")
        .last()
        .unwrap();
    let want = format!("ACK {}\r\n", acked + 30);
    console
        .wait_for_output(want.as_bytes(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|l| panic!("the guest did not go on: {}", String::from_utf8_lossy(&l)));
    // And more than one round's worth, from outside the writer's region.
    device_write(&vm, "disk0-dev", "write -P 0x77 20M 6M").await;
    let missed = resync::missed(vm.qmp(), &nodes).await.unwrap().unwrap();
    assert!(
        missed > 6 << 20 && missed < 7 << 20,
        "missed {missed} bytes"
    );

    // The link is back: only what was missed is copied, while the guest
    // writes on.
    let mut seen = Vec::new();
    let done = resync::resume(
        vm.qmp(),
        std::slice::from_ref(&target),
        None,
        std::future::pending(),
        |p| seen.push(p),
    )
    .await
    .unwrap();
    eprintln!("resumed: {done:?}, missed {missed} bytes");
    assert!(done.copied >= missed, "{done:?}, missed {missed}");
    assert!(done.rounds >= 1, "{done:?}");
    assert!(
        done.copied < 12 << 20,
        "a resume copies what was missed, not the disk: {done:?}"
    );
    assert!(seen.last().is_some_and(|p| p.done == p.len), "{seen:?}");
    assert_eq!(
        link::state(vm.qmp(), "disk0").await.unwrap(),
        LinkState::Replicated
    );
    assert_eq!(
        resync::missed(vm.qmp(), &nodes).await.unwrap(),
        None,
        "the record is gone"
    );
    assert_eq!(vm.state(), VmState::Running);
    let acked = *numbers(&console.read_log().await.unwrap(), "ACK ")
        .last()
        .unwrap();
    let want = format!("ACK {}\r\n", acked + 20);
    console
        .wait_for_output(want.as_bytes(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|l| panic!("the guest did not go on: {}", String::from_utf8_lossy(&l)));
    assert!(
        !String::from_utf8_lossy(&console.read_log().await.unwrap()).contains("ACKER-WRITE-FAILED"),
        "no write failed to the guest"
    );

    // Both copies are the same disk: the old content, and every record.
    identical_once_stopped(vm, server, &data, &replica).await;
    let recs = records(&replica, SIZE);
    assert!(recs.len() as u64 > acked + 20, "{}", recs.len());
    assert!(recs.iter().enumerate().all(|(i, n)| *n == i as u64));
}

/// Launches the Linux guest (`kernel`) on `active` with the replicated
/// disk `data`, where its acknowledged writer writes.
async fn launch_acked(
    active: &TestDir,
    kernel: nasvisor_vm::KernelBoot,
    data: &Path,
) -> nasvisor_vm::VmInstance {
    let mut spec = VmSpec::new("acked", 256);
    spec.kernel = Some(kernel);
    spec.disks.push(DiskSpec {
        replicated: true,
        ..DiskSpec::qcow2(data)
    });
    active.launch(&spec).await
}

/// Stops `vm` and the replica `server`, then checks that the disk image
/// `data` and its replica image are the same disk (`qemu-img compare`).
async fn identical_once_stopped(
    vm: nasvisor_vm::VmInstance,
    server: ReplicaServer,
    data: &Path,
    replica: &Path,
) {
    vm.force_off().await.unwrap();
    server.stop().await.unwrap();
    let cmp = std::process::Command::new("qemu-img")
        .args(["compare", "-f", "qcow2", "-F", "qcow2"])
        .arg(data)
        .arg(replica)
        .output()
        .unwrap();
    assert!(
        cmp.status.success(),
        "{}{}",
        String::from_utf8_lossy(&cmp.stdout),
        String::from_utf8_lossy(&cmp.stderr)
    );
}

/// Waits until the guest is held on a write error (`BLOCK_IO_ERROR`).
async fn held(
    events: &mut tokio::sync::broadcast::Receiver<nasvisor_vm::QmpEvent>,
    within: Duration,
) {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Ok(e)) => {
                if let EventKind::BlockIoError { .. } = e.kind() {
                    return;
                }
            }
            other => panic!("the guest was not held: {other:?}"),
        }
    }
}

/// Starts the guest's acknowledged writer on `console` and waits for its
/// first `n` acknowledgements.
async fn start_acker(console: &nasvisor_vm::Console, n: u64) {
    // The shell first: a probe whose answer differs from its echo, sent
    // again every 5 s until it answers. Only the probe is ever sent twice:
    // the writer, sent again to a slow guest, would run twice.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "the guest's shell never answered"
        );
        console.write(b"echo SHELL-$((40+2))-UP\n").await.unwrap();
        if console
            .wait_for_output(b"SHELL-42-UP", Duration::from_secs(5))
            .await
            .is_ok()
        {
            break;
        }
    }
    console
        .write(b"/lib/nasvisor/acker 20000 &\n")
        .await
        .unwrap();
    console
        .wait_for_output(b"RECORDS-FOUND 0", Duration::from_secs(60))
        .await
        .unwrap_or_else(|l| panic!("the acker never started: {}", String::from_utf8_lossy(&l)));
    more_acks(console, n).await;
}

/// Waits until the writer acknowledged `n` records more.
async fn more_acks(console: &nasvisor_vm::Console, n: u64) {
    let last = numbers(&console.read_log().await.unwrap(), "ACK ")
        .last()
        .copied();
    let want = format!("ACK {}\r\n", last.map_or(n, |l| l + n));
    console
        .wait_for_output(want.as_bytes(), Duration::from_secs(60))
        .await
        .unwrap_or_else(|l| panic!("the writer stopped: {}", String::from_utf8_lossy(&l)));
}

/// With the replica hanging (its server or its disk): the guest's writer
/// stops with no error and the guest stays `running` (no bound fires), the
/// probe times out, and the cut holds the guest on its write until the
/// replica is detached and the guest goes on alone.
async fn stalled_until_the_probe_cuts(
    vm: &nasvisor_vm::VmInstance,
    console: &nasvisor_vm::Console,
    targets: &[MirrorTarget],
    sockets: &link::Sockets,
) {
    use nasvisor_vm::replica::{probe, resync};
    let mut events = vm.qmp().events();
    let last = |log: Vec<u8>| numbers(&log, "ACK ").last().copied().unwrap();
    let stopped_at = last(console.read_log().await.unwrap());
    tokio::time::sleep(Duration::from_secs(7)).await;
    let still = last(console.read_log().await.unwrap());
    assert!(
        still <= stopped_at + 1,
        "the writer went on: {stopped_at} -> {still}"
    );
    assert_eq!(
        vm.qmp().query_status().await.unwrap().status,
        RunState::Running
    );
    let e = probe::probe(Path::new("qemu-io"), targets, None, Duration::from_secs(3))
        .await
        .unwrap_err();
    assert!(matches!(e, probe::ProbeError::Timeout { .. }), "{e}");
    sockets.cut();
    held(&mut events, Duration::from_secs(10)).await;
    let nodes: Vec<String> = targets.iter().map(|t| t.node.clone()).collect();
    resync::detach_tracking(vm.qmp(), &nodes).await.unwrap();
    vm.qmp().cont().await.unwrap();
    more_acks(console, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_server_that_stops_answering_is_found_by_a_probe_cut_off_and_resumed() {
    use nasvisor_vm::replica::{probe, resync};
    let Some(kernel) = guest_kernel("console=ttyS0 panic=-1") else {
        return;
    };
    let active = TestDir::new();
    let passive = TestDir::new();
    let data = active.file("data.qcow2");
    qcow2(&data, "64M");
    let vm = launch_acked(&active, kernel, &data).await;
    let console = vm.console().unwrap();
    let nodes = ["disk0".to_string()];
    let (server, replica, target) = serve_replica(&passive, "disk0", "64M", None).await;
    let ours = attach(&vm, &target, None).await.unwrap();
    assert_eq!(ours.disks(), nodes);
    // As after a restart of nasvisord: its copies gone, QEMU's socket is
    // found again in QEMU's descriptors.
    drop(ours);
    let sockets = link::Sockets::recover(vm.pid(), &target.addr).unwrap();
    assert_eq!(sockets.disks().len(), 1, "{sockets:?}");
    let qemu_io = Path::new("qemu-io");
    let within = Duration::from_secs(3);
    let targets = std::slice::from_ref(&target);
    probe::probe(qemu_io, targets, None, within).await.unwrap();
    start_acker(console, 10).await;

    // The server stops (SIGSTOP): its kernel still takes QEMU's bytes, so
    // the guest's writes hang with no error, the link's bound never comes,
    // and only the probe tells.
    // SAFETY: kill(2) of the replica server this test started, by its pid.
    unsafe {
        libc::kill(server.pid(), libc::SIGSTOP);
    }
    stalled_until_the_probe_cuts(&vm, console, targets, &sockets).await;

    // A resume while it still hangs fails within its bound (QEMU opens the
    // connection in its main loop: the socket is shut down), and the guest
    // goes on.
    let began = std::time::Instant::now();
    let e = resync::resume(vm.qmp(), targets, None, std::future::pending(), |_| {})
        .await
        .unwrap_err();
    assert!(
        began.elapsed() < Duration::from_secs(20),
        "{:?}",
        began.elapsed()
    );
    assert!(e.to_string().contains("connecting its replica"), "{e}");
    assert_eq!(
        link::state(vm.qmp(), "disk0").await.unwrap(),
        LinkState::Alone
    );
    more_acks(console, 10).await;

    // The server answers again: the replica resumes and ends identical.
    // SAFETY: kill(2) of the replica server this test started, by its pid.
    unsafe {
        libc::kill(server.pid(), libc::SIGCONT);
    }
    probe::probe(qemu_io, targets, None, within).await.unwrap();
    let done = resync::resume(vm.qmp(), targets, None, std::future::pending(), |_| {})
        .await
        .unwrap();
    assert!(done.copied > 0 && done.copied < 4 << 20, "{done:?}");
    more_acks(console, 10).await;
    assert!(
        !String::from_utf8_lossy(&console.read_log().await.unwrap()).contains("ACKER-WRITE-FAILED"),
        "no write failed to the guest"
    );
    identical_once_stopped(vm, server, &data, &replica).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_whose_disk_hangs_under_a_live_server_is_found_by_the_probes_write_and_cut_off() {
    use nasvisor_vm::replica::{probe, resync};
    let Some(kernel) = guest_kernel("console=ttyS0 panic=-1") else {
        return;
    };
    let active = TestDir::new();
    let passive = TestDir::new();
    let (backing, pool) = (passive.file("backing"), passive.file("pool"));
    std::fs::create_dir_all(&backing).unwrap();
    std::fs::create_dir_all(&pool).unwrap();
    // The passive host's pool is on a disk that can stop answering; the
    // server itself (its process, its socket, its QMP) stays alive.
    let disk = HungMount::mount(None, &backing, &pool);
    let data = active.file("data.qcow2");
    qcow2(&data, "64M");
    let vm = launch_acked(&active, kernel, &data).await;
    let console = vm.console().unwrap();
    let (server, replica, target) =
        serve_replicas_in(&passive, &pool, &["disk0"], "64M", None).await;
    let ours = attach(&vm, &target, None).await.unwrap();
    let qemu_io = Path::new("qemu-io");
    let within = Duration::from_secs(3);
    let targets = std::slice::from_ref(&target);
    probe::probe(qemu_io, targets, None, within).await.unwrap();
    start_acker(console, 10).await;

    disk.hang();
    // Nothing fails on its own: the server's socket answers, QEMU's write
    // just waits on the disk. A read would be answered from the server's
    // page cache, and a flush is skipped while no write completed; the
    // probe's write to its file beside the replica must reach the disk,
    // and does not come back.
    stalled_until_the_probe_cuts(&vm, console, targets, &ours).await;

    // The disk answers again: the replica resumes from what it missed and
    // ends identical.
    disk.answer();
    probe::probe(qemu_io, targets, None, within).await.unwrap();
    let done = resync::resume(vm.qmp(), targets, None, std::future::pending(), |_| {})
        .await
        .unwrap();
    assert!(done.copied < 8 << 20, "{done:?}");
    more_acks(console, 10).await;
    assert!(
        !String::from_utf8_lossy(&console.read_log().await.unwrap()).contains("ACKER-WRITE-FAILED"),
        "no write failed to the guest"
    );
    identical_once_stopped(vm, server, &data, &replica).await;
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_a_probe_file_is_probed_by_a_read_and_a_flush_of_its_export() {
    use nasvisor_vm::replica::probe;
    // As a replica server an older nasvisord started: the replica export
    // alone (here served by qemu-nbd).
    let t = TestDir::new();
    let image = t.file("disk0-replica.qcow2");
    qcow2(&image, "16M");
    let port = free_port();
    let mut server = std::process::Command::new("qemu-nbd")
        .args(["-t", "-f", "qcow2", "-x", "disk0", "-b", "127.0.0.1", "-p"])
        .arg(port.to_string())
        .arg(&image)
        .spawn()
        .unwrap();
    let target = MirrorTarget {
        node: "disk0".into(),
        addr: InetAddr::new("127.0.0.1", port),
        export: "disk0".into(),
    };
    let targets = std::slice::from_ref(&target);
    let qemu_io = Path::new("qemu-io");
    let within = Duration::from_secs(3);
    let answered = async {
        for _ in 0..50 {
            if probe::probe(qemu_io, targets, None, within).await.is_ok() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    };
    let answered = answered.await;
    // SAFETY: kill(2) of the qemu-nbd this test started, by its pid.
    unsafe {
        libc::kill(server.id() as i32, libc::SIGSTOP);
    }
    let stopped = probe::probe(qemu_io, targets, None, within).await;
    // SAFETY: as above.
    unsafe {
        libc::kill(server.id() as i32, libc::SIGCONT);
    }
    let _ = server.kill();
    let _ = server.wait();
    // (Its probe export is missing: the read and flush answered.)
    assert!(answered, "the export was never probed successfully");
    let e = stopped.unwrap_err();
    assert!(matches!(e, probe::ProbeError::Timeout { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_server_refuses_a_missing_image_or_a_busy_port_and_leaves_nothing_running() {
    use nasvisor_vm::replica::{ReplicaDisk, ReplicaPaths, ReplicaServer};
    let t = TestDir::new();
    let addr = InetAddr::new("127.0.0.1", free_port());
    let missing = [ReplicaDisk {
        node: "disk0".into(),
        path: t.file("nope.qcow2"),
    }];
    let bin = Path::new("qemu-storage-daemon");
    let e = ReplicaServer::start(bin, t.path(), "r1", &missing, &addr, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("nope.qcow2"), "{e}");

    // A port another process holds: the export fails, and the server that
    // was started for it is gone.
    let img = t.file("r.qcow2");
    qcow2(&img, "1M");
    let busy = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap();
    let taken = InetAddr::new("127.0.0.1", busy.local_addr().unwrap().port());
    let disks = [ReplicaDisk {
        node: "disk0".into(),
        path: img,
    }];
    let e = ReplicaServer::start(bin, t.path(), "r2", &disks, &taken, None)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("r2"), "{e}");
    let pid = nasvisor_vm::proc::read_pidfile(&ReplicaPaths::new(t.path(), "r2").pidfile());
    if let Ok(pid) = pid {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while nasvisor_vm::proc::is_alive(pid) {
            assert!(
                std::time::Instant::now() < deadline,
                "server {pid} left running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_replica_ends_its_mirror_and_the_guests_writes_go_on() {
    use nasvisor_vm::replica::{ReplicaDisk, ReplicaServer};
    let active = TestDir::new();
    let passive = TestDir::new();
    let data = active.file("data.qcow2");
    let replica = passive.file("data-replica.qcow2");
    for img in [&data, &replica] {
        qcow2(img, "32M");
    }
    let mut spec = active.guest_spec("protected", GuestMode::Idle);
    spec.disks.push(DiskSpec::qcow2(&data));
    let vm = active.launch(&spec).await;
    let addr = InetAddr::new("127.0.0.1", free_port());
    let disks = [ReplicaDisk {
        node: "disk1".into(),
        path: replica.clone(),
    }];
    let bin = Path::new("qemu-storage-daemon");
    let server = ReplicaServer::start(bin, passive.path(), "protected", &disks, &addr, None)
        .await
        .unwrap();
    let mut mirrors = MirrorSet::replicas(vm.qmp());
    let target = MirrorTarget {
        node: "disk1".into(),
        addr: addr.clone(),
        export: "disk1".into(),
    };
    mirrors.add(&target, None).await.unwrap();
    mirrors
        .wait_ready(std::future::pending(), |_| {})
        .await
        .unwrap();
    let mut events = vm.qmp().events();

    // The passive host dies. A write-blocking mirror alone does not hold
    // the guest: its next write still completes at once, on the active copy
    // only, and the mirror ends with an error. This is why a replicated
    // disk is a quorum (the test above).
    // SAFETY: kill(2) of the replica server this test started, by its pid.
    unsafe {
        libc::kill(server.pid(), libc::SIGKILL);
    }
    let write = vm.qmp().human_monitor_command(
        "qemu-io -d /machine/peripheral/disk1-dev/virtio-backend \"write -P 0xa5 8M 256k\"",
    );
    let out = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("the write completes though the replica is gone")
        .unwrap();
    // (Whether it succeeded shows in the image below: see device_write.)
    drop(out);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let ended = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match tokio::time::timeout(left, events.recv()).await {
            Ok(Ok(e)) => {
                if let nasvisor_vm::EventKind::BlockJobCompleted { device, error, .. } = e.kind() {
                    if device == "rep-disk1" {
                        break error;
                    }
                }
            }
            other => panic!("no end of the mirror: {other:?}"),
        }
    };
    assert!(ended.is_some(), "the mirror ended with an error");
    assert!(vm.qmp().query_block_jobs().await.unwrap().is_empty());
    assert_eq!(vm.state(), VmState::Running);
    vm.force_off().await.unwrap();
    let check = qemu_io(&data, &["read -P 0xa5 8M 256k"]);
    assert!(!check.contains("Pattern verification failed"), "{check}");
}

/// The cost of a replica (`benches/replica.sh`): one VM with two data disks
/// of the same size, one plain and one replicated onto a replica server on
/// loopback (over TLS, as between hosts). Each round times, through the
/// guest's device on each disk, a 4 KiB write followed by a flush (what a
/// synced guest write costs) and a 1 MiB write; the disks take turns so
/// that both see the same machine. Prints one `REPLICA` line per round.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by benches/replica.sh"]
async fn replica_write_cost() {
    let rounds: u64 = std::env::var("NASVISOR_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let active = TestDir::new();
    let passive = TestDir::new();
    let mut spec = active.guest_spec("bench", GuestMode::Idle);
    for (name, replicated) in [("plain.qcow2", false), ("replicated.qcow2", true)] {
        let img = active.file(name);
        qcow2(&img, "512M");
        spec.disks.push(DiskSpec {
            replicated,
            ..DiskSpec::qcow2(&img)
        });
    }
    let vm = active.launch(&spec).await;
    let certs = tempfile::tempdir().unwrap();
    let (server_dir, client_dir) = test_certificates(certs.path());
    let tls = ReplicaTls {
        dir: server_dir,
        client_identity: "CN=node-1,O=nasvisor".into(),
    };
    let (server, _replica, target) =
        serve_replicas(&passive, &["disk2", "nbd-only"], "512M", Some(&tls)).await;
    let ct = tls_client(vm.qmp(), "cli", &client_dir, "node-2")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let sockets = attach(&vm, &target, Some(&ct)).await.unwrap();
    println!(
        "ATTACH empty_512MiB_s={:.3}",
        started.elapsed().as_secs_f64()
    );
    // A plain NBD disk on the same link (the same server, over TLS): what
    // one round trip to the passive host costs, without a local copy.
    nasvisor_vm::qmp::QmpClient::blockdev_add(
        vm.qmp(),
        &nasvisor_vm::qmp::BlockdevOptions::Nbd(nasvisor_vm::qmp::NbdNode::new(
            "plain-nbd",
            target.addr.clone(),
            "nbd-only",
            Some(&ct),
        )),
    )
    .await
    .unwrap();
    let timed = |dev: &'static str, ops: Vec<String>| {
        let vm = &vm;
        async move {
            let t = std::time::Instant::now();
            for op in ops {
                device_write(vm, dev, &op).await;
            }
            t.elapsed().as_secs_f64() * 1000.0
        }
    };
    for r in 0..rounds {
        let off4k = (r % 4096) * 4096;
        let off1m = (r % 256) << 20;
        let synced = || vec![format!("write -P 0x5a {off4k} 4k"), "flush".to_string()];
        let big = || vec![format!("write -P 0xa5 {off1m} 1M")];
        let plain_sync = timed("disk1-dev", synced()).await;
        let rep_sync = timed("disk2-dev", synced()).await;
        let plain_1m = timed("disk1-dev", big()).await;
        let rep_1m = timed("disk2-dev", big()).await;
        let nbd_sync = node_timed(&vm, "plain-nbd", synced()).await;
        let nbd_1m = node_timed(&vm, "plain-nbd", big()).await;
        println!(
            "REPLICA round={r} plain_sync_ms={plain_sync:.3} replicated_sync_ms={rep_sync:.3} \
             nbd_sync_ms={nbd_sync:.3} plain_1m_ms={plain_1m:.3} replicated_1m_ms={rep_1m:.3} \
             nbd_1m_ms={nbd_1m:.3}"
        );
    }
    assert_eq!(
        link::state(vm.qmp(), "disk2").await.unwrap(),
        LinkState::Replicated
    );

    // A lost replica brought back: a resume of what it missed against a
    // full copy of the same disk, in the same run.
    use nasvisor_vm::replica::resync;
    let nodes = ["disk2".to_string()];
    sockets.cut();
    resync::detach_tracking(vm.qmp(), &nodes).await.unwrap();
    let missed_mib: u64 = 32;
    for i in 0..missed_mib {
        device_write(&vm, "disk2-dev", &format!("write -P 0x33 {}M 1M", 300 + i)).await;
    }
    let t = std::time::Instant::now();
    let done = resync::resume(
        vm.qmp(),
        std::slice::from_ref(&target),
        Some(&ct),
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    println!(
        "RESUME missed_mib={missed_mib} s={:.3} copied_mib={:.1} rounds={} paused_ms={:.1}",
        t.elapsed().as_secs_f64(),
        done.copied as f64 / f64::from(1u32 << 20),
        done.rounds,
        done.paused.as_secs_f64() * 1000.0
    );
    link::detach(vm.qmp(), &nodes).await.unwrap();
    let mut full = 0;
    let t = std::time::Instant::now();
    attach_with(&vm, &target, Some(&ct), |p| full = p.done)
        .await
        .unwrap();
    println!(
        "FULL s={:.3} copied_mib={:.1}",
        t.elapsed().as_secs_f64(),
        full as f64 / f64::from(1u32 << 20)
    );
    vm.force_off().await.unwrap();
    server.stop().await.unwrap();
}

/// Milliseconds `ops` take through HMP `qemu-io` on block node `node`.
async fn node_timed(vm: &nasvisor_vm::VmInstance, node: &str, ops: Vec<String>) -> f64 {
    let t = std::time::Instant::now();
    for op in ops {
        let out = vm
            .qmp()
            .human_monitor_command(&format!("qemu-io {node} \"{op}\""))
            .await
            .unwrap();
        drop(out); // qemu-io reports to QEMU's own output (device_write)
    }
    t.elapsed().as_secs_f64() * 1000.0
}
