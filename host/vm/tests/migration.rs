//! The migration mechanism against two real QEMUs under TCG on loopback:
//! disk mirrors onto the target's NBD exports, the memory stream (plain and
//! over TLS with certificates of a test CA made with `openssl`) on a socket
//! opened here and handed to QEMU, the switch, the stream's backlog when
//! the target stops reading, and the failure paths (a missing export, a
//! cancel).

mod common;

use std::cell::Cell;
use std::io::Read as _;
use std::time::Duration;

use common::*;
use nasvisor_vm::migration::{
    leftover_mirror_nodes, listen_incoming, migrate_out, serve_disks, tls_client, tls_server,
    MigrationStream, MirrorSet, MirrorTarget, OutgoingSettings, UNSENT_CAP,
};
use nasvisor_vm::qmp::{InetAddr, MigrationStatus, RunState};
use nasvisor_vm::{DiskSpec, InstanceOptions, MigrateError, VmInstance, VmSpec, VmState};

/// A port on loopback that was free a moment ago.
/// The guest (boot disk) plus a 16 MiB data disk of random bytes, and the
/// target's spec: the same disks, empty, in the target's directory.
fn specs(src: &TestDir, dst: &TestDir) -> (VmSpec, VmSpec) {
    let mut spec = src.guest_spec("migrant", GuestMode::Idle);
    let data = src.file("data.img");
    let mut bytes = vec![0u8; 16 << 20];
    // Cheap pseudo-random content (xorshift), so a copy of zeroes fails.
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&data, &bytes).unwrap();
    spec.disks.push(DiskSpec::raw(&data));
    let mut target = spec.clone();
    for (i, d) in target.disks.iter_mut().enumerate() {
        let empty = dst.file(&format!("disk{i}.img"));
        let len = std::fs::metadata(&d.path).unwrap().len();
        std::fs::File::create(&empty).unwrap().set_len(len).unwrap();
        d.path = empty;
    }
    (spec, target)
}

/// Moves a running guest with its two disks from one QEMU to another (over
/// TLS when `tls`), the way a move between hosts does, and checks the
/// target's disks and guest. Returns the downtime QEMU reported.
async fn move_guest(tls: bool) -> u64 {
    let src_host = TestDir::new();
    let dst_host = TestDir::new();
    let (spec, target_spec) = specs(&src_host, &dst_host);
    let src = src_host.launch(&spec).await;
    src.console()
        .unwrap()
        .wait_for_output(BANNER, SLOW)
        .await
        .unwrap();
    let mut incoming = dst_host.launch_options();
    incoming.incoming_defer = true;
    let dst = VmInstance::launch(&target_spec, &incoming, InstanceOptions::default())
        .await
        .unwrap();

    // The target: TLS admitting only node-1, NBD exports, the stream.
    let certs = tempfile::tempdir().unwrap();
    let (server_tls, client_tls) = if tls {
        let (s, c) = test_certificates(certs.path());
        let st = tls_server(dst.qmp(), "srv", &s, "authz", "CN=node-1,O=nasvisor")
            .await
            .unwrap();
        let ct = tls_client(src.qmp(), "cli", &c, "node-2").await.unwrap();
        (Some(st), Some(ct))
    } else {
        (None, None)
    };
    let nbd = InetAddr::new("127.0.0.1", free_port());
    let nodes = vec!["disk0".to_string(), "disk1".to_string()];
    serve_disks(dst.qmp(), &nbd, &nodes, server_tls.as_ref())
        .await
        .unwrap();
    let uri = format!("tcp:127.0.0.1:{}", free_port());
    listen_incoming(dst.qmp(), &uri, server_tls.as_ref())
        .await
        .unwrap();

    // The source: mirrors, in sync; then the memory.
    let mut mirrors = MirrorSet::new(src.qmp());
    for node in &nodes {
        let t = MirrorTarget {
            node: node.clone(),
            addr: nbd.clone(),
            export: node.clone(),
        };
        mirrors.add(&t, client_tls.as_ref()).await.unwrap();
    }
    let mut seen = Vec::new();
    mirrors
        .wait_ready(std::future::pending(), |p| seen.push(p))
        .await
        .unwrap();
    let last = seen.last().copied().unwrap_or_default();
    assert!(
        last.len >= 17 << 20 && last.done == last.len,
        "progress of the mirrors: {seen:?}"
    );
    let settings = OutgoingSettings {
        max_downtime_ms: 300,
        max_bandwidth: 10 << 30,
        tls: client_tls,
    };
    let stream = MigrationStream::connect(&uri).await.unwrap();
    let done = migrate_out(
        src.qmp(),
        &settings,
        &stream,
        std::future::pending(),
        |_| {},
    )
    .await
    .unwrap();
    drop(stream);
    let info = done.info;
    assert!(done.paused_at.is_some(), "the pause was seen");
    assert_eq!(info.status, Some(MigrationStatus::Completed));
    // Paused for good (`finish-migrate` until QEMU's bottom half makes it
    // `postmigrate`).
    let st = src.qmp().query_status().await.unwrap();
    assert!(
        !st.running && matches!(st.status, RunState::FinishMigrate | RunState::Postmigrate),
        "{st:?}"
    );
    mirrors.finish_in_sync(SLOW).await.unwrap();
    assert!(src.qmp().query_block_jobs().await.unwrap().is_empty());

    // The switch: the target loads and resumes, then stops its NBD server
    // (as a host does: the guest's pause ends first), and its disks are the
    // source's.
    dst.wait_incoming_loaded(SLOW).await.unwrap();
    dst.resume().await.unwrap();
    assert_eq!(dst.state(), VmState::Running);
    dst.qmp().nbd_server_stop().await.unwrap();
    for (s, d) in spec.disks.iter().zip(&target_spec.disks) {
        assert!(
            std::fs::read(&s.path).unwrap() == std::fs::read(&d.path).unwrap(),
            "{} differs from its copy {}",
            s.path.display(),
            d.path.display()
        );
    }
    let console = dst.console().unwrap();
    let mut answered = false;
    for _ in 0..40 {
        console.write(b"~").await.unwrap();
        if console
            .wait_for_output(b"~", Duration::from_millis(250))
            .await
            .is_ok()
        {
            answered = true;
            break;
        }
    }
    assert!(answered, "the guest never echoed on the target");
    src.force_off().await.unwrap();
    dst.force_off().await.unwrap();
    info.downtime
        .expect("a completed migration reports its downtime")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirrored_disks_and_memory_move_to_another_qemu_and_the_guest_runs_on_there() {
    let downtime = move_guest(false).await;
    eprintln!("plain: downtime {downtime} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_over_tls_admits_the_expected_client_and_moves_disks_and_memory() {
    let downtime = move_guest(true).await;
    eprintln!("tls: downtime {downtime} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirror_onto_a_missing_export_fails_naming_the_disk_and_leaves_no_node_behind() {
    let src_host = TestDir::new();
    let dst_host = TestDir::new();
    let (spec, target_spec) = specs(&src_host, &dst_host);
    let src = src_host.launch(&spec).await;
    let mut incoming = dst_host.launch_options();
    incoming.incoming_defer = true;
    let dst = VmInstance::launch(&target_spec, &incoming, InstanceOptions::default())
        .await
        .unwrap();
    let nbd = InetAddr::new("127.0.0.1", free_port());
    serve_disks(dst.qmp(), &nbd, &["disk0".to_string()], None)
        .await
        .unwrap();
    let mut mirrors = MirrorSet::new(src.qmp());
    mirrors
        .add(
            &MirrorTarget {
                node: "disk0".into(),
                addr: nbd.clone(),
                export: "disk0".into(),
            },
            None,
        )
        .await
        .unwrap();
    let err = mirrors
        .add(
            &MirrorTarget {
                node: "disk1".into(),
                addr: nbd.clone(),
                export: "no-such-export".into(),
            },
            None,
        )
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(err, MigrateError::Qmp { .. })
            && msg.contains("disk1")
            && msg.contains(&nbd.to_string()),
        "{msg}"
    );
    let problems = mirrors.abort().await;
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        leftover_mirror_nodes(src.qmp()).await.unwrap(),
        Vec::<String>::new()
    );
    assert!(src.qmp().query_block_jobs().await.unwrap().is_empty());
    assert_eq!(src.state(), VmState::Running);
    src.force_off().await.unwrap();
    dst.force_off().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_memory_migration_leaves_the_source_running() {
    let src_host = TestDir::new();
    let dst_host = TestDir::new();
    // 512 MiB of guest memory: the stream cannot be over before the cancel.
    let mut spec = src_host.guest_spec("big", GuestMode::Idle);
    spec.memory_mib = 512;
    let src = src_host.launch(&spec).await;
    let (dst, uri) = plain_incoming(&dst_host, &spec).await;
    // 1 MiB/s: the copy takes minutes.
    let settings = plain_settings(1 << 20);
    let stream = MigrationStream::connect(&uri).await.unwrap();
    let err = migrate_out(
        src.qmp(),
        &settings,
        &stream,
        tokio::time::sleep(Duration::from_millis(300)),
        |_| {},
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MigrateError::Cancelled), "{err}");
    let mut status = None;
    for _ in 0..100 {
        status = src.qmp().query_migrate().await.unwrap().status;
        if status.is_some_and(|s| s.is_final()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(status, Some(MigrationStatus::Cancelled));
    assert!(src.qmp().query_status().await.unwrap().running);
    src.force_off().await.unwrap();
    dst.force_off().await.unwrap();
}

/// A receiver on loopback that reads the first `take` bytes of one
/// connection, then stops reading (and says so on the first channel) and
/// holds the connection open until the second one's sender is dropped.
fn receiver_that_stops_reading(
    take: usize,
) -> (
    String,
    std::sync::mpsc::Receiver<()>,
    std::sync::mpsc::Sender<()>,
) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let uri = format!("tcp:{}", listener.local_addr().unwrap());
    let (stopped_tx, stopped_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 64 << 10];
        let mut got = 0;
        while got < take {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        // Nobody waits any more when the test already failed.
        let _ = stopped_tx.send(());
        // Unread until the test is done (an error: its sender dropped).
        let _ = done_rx.recv();
        drop(conn);
    });
    (uri, stopped_rx, done_tx)
}

/// The memory stream's socket holds little unsent data when the target
/// reads slowly: QEMU waits with the rest instead of queuing megabytes in
/// the kernel ahead of the switch. Without the cap the source's send queue
/// grows to several MiB (about 3.7 MiB here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_stream_runs_little_ahead_of_a_target_that_stops_reading() {
    let src_host = TestDir::new();
    // Guest memory that is not zero (zero pages travel as a few bytes):
    // 64 MiB of pseudo-random bytes behind the guest's RAM.
    let ram = src_host.file("ram.bin");
    let mut bytes = vec![0u8; 64 << 20];
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    for chunk in bytes.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    std::fs::write(&ram, &bytes).unwrap();
    drop(bytes);
    let spec = src_host.guest_spec("backlog", GuestMode::Idle);
    let mut opts = src_host.launch_options();
    opts.extra_args = vec![
        "-object".into(),
        format!(
            "memory-backend-file,id=nv-ram,mem-path={},size=64M,share=off",
            ram.display()
        ),
        "-machine".into(),
        "memory-backend=nv-ram".into(),
    ];
    let src = VmInstance::launch(&spec, &opts, InstanceOptions::default())
        .await
        .unwrap();

    let (uri, stopped, _done) = receiver_that_stops_reading(2 << 20);
    let stream = MigrationStream::connect(&uri).await.unwrap();
    let settings = OutgoingSettings {
        max_downtime_ms: 300,
        max_bandwidth: 10 << 30,
        tls: None,
    };
    // The "cancel" of the migration watches the source's socket: once the
    // receiver stopped reading, it samples the unsent bytes for 3 s.
    let most = Cell::new(0u64);
    let samples = Cell::new(0u32);
    let watch = async {
        while stopped.try_recv().is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        for _ in 0..150 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            most.set(most.get().max(stream.unsent_bytes().unwrap()));
            samples.set(samples.get() + 1);
        }
    };
    let stalled = tokio::time::timeout(
        SLOW,
        migrate_out(src.qmp(), &settings, &stream, watch, |_| {}),
    )
    .await
    .expect("the watch ends the migration");
    assert!(
        matches!(stalled, Err(MigrateError::Cancelled)),
        "the stream cannot complete while the receiver does not read: {stalled:?}"
    );
    drop(stream);
    let (most, samples) = (most.get(), samples.get());
    eprintln!("unsent: at most {most} bytes over {samples} samples (cap {UNSENT_CAP})");
    assert_eq!(samples, 150);
    assert!(
        most >= 16 << 10,
        "QEMU never got ahead of the receiver: {most} bytes unsent"
    );
    assert!(
        most < 1 << 20,
        "{most} bytes queued unsent in the source's socket"
    );
    assert!(src.qmp().query_status().await.unwrap().running);
    src.force_off().await.unwrap();
}

/// The floor of a live move's guest-visible gap, without nasvisord: the
/// bundled Linux guest (no disk) prints a tick every 10 ms on its console;
/// it is paused and resumed in place (a warm QEMU), then moved from QEMU to
/// a fresh QEMU on loopback, the target resumed the moment it loaded. The
/// gaps are read from the console logs QEMU writes (see nasvisor-ticks).
/// Run by `benches/failover.sh` beside the cluster's switchovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by benches/failover.sh"]
async fn bench_switch_gap_floor() {
    use nasvisor_ticks::{longest_gap, ticker_command, TickMeter};
    use std::time::Instant;
    let Some(kernel) = guest_kernel("console=ttyS0 panic=-1") else {
        return;
    };
    let runs: usize = std::env::var("NASVISOR_BENCH_SWITCHOVERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    let mut spec = VmSpec::new("ticker", 256);
    spec.kernel = Some(kernel);
    let dirs: Vec<TestDir> = (0..=runs).map(|_| TestDir::new()).collect();
    let mut vm = dirs[0].launch(&spec).await;
    let console = vm.console().unwrap();
    console
        .wait_for_output(b"NASVISOR-BOOT-DONE", Duration::from_secs(240))
        .await
        .unwrap();
    // busybox init starts the console's shell after it.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let tick = Duration::from_millis(10);
    let logs: Vec<_> = dirs
        .iter()
        .map(|d| d.path().join(format!("{}.console.log", spec.uuid)))
        .collect();
    assert_eq!(console.log_path(), logs[0]);
    let meter = TickMeter::start(logs);
    let line = format!("{}\n", ticker_command(tick));
    console.write(line.as_bytes()).await.unwrap();
    console
        .wait_for_output(b"TICK 20", Duration::from_secs(30))
        .await
        .unwrap();

    // In place: stopped for 20 ms.
    for run in 0..runs {
        // The window opens before the tick that precedes the stop.
        let from = Instant::now();
        tokio::time::sleep(Duration::from_millis(200)).await;
        vm.qmp().stop().await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        vm.qmp().cont().await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let gap = longest_gap(&meter.ticks(), from, Instant::now());
        assert!(gap.ticks > 20, "the ticker stopped: {gap:?}");
        println!(
            "FLOOR-INPLACE run={run} stopped_ms=20 guest_gap_ms={}",
            gap.length.as_millis()
        );
    }
    // Moves, each to a fresh QEMU.
    for run in 0..runs {
        let calm = Instant::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let from = Instant::now();
        let baseline = longest_gap(&meter.ticks(), calm, from);
        let (dst, uri) = plain_incoming(&dirs[run + 1], &spec).await;
        let settings = plain_settings(10 << 30);
        let stream = MigrationStream::connect(&uri).await.unwrap();
        let done = migrate_out(vm.qmp(), &settings, &stream, std::future::pending(), |_| {})
            .await
            .unwrap();
        drop(stream);
        dst.wait_incoming_loaded(SLOW).await.unwrap();
        dst.resume().await.unwrap();
        let resumed = std::time::SystemTime::now();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ticks = meter.ticks();
        let gap = longest_gap(&ticks, from, Instant::now());
        let first_there = ticks
            .iter()
            .find(|(_, t)| t.log == run + 1)
            .map(|(_, t)| t.wall)
            .expect("the ticker runs on in the target");
        let pause_ms = done
            .paused_at
            .and_then(|p| resumed.duration_since(p).ok())
            .map_or(0, |d| d.as_millis());
        println!(
            "FLOOR-MOVE run={run} downtime_ms={} pause_ms={pause_ms} first_tick_after_resume_ms={} \
             guest_gap_ms={} baseline_gap_ms={}",
            done.info.downtime.unwrap_or_default(),
            first_there
                .duration_since(resumed)
                .map_or(0, |d| d.as_millis()),
            gap.length.as_millis(),
            baseline.length.as_millis()
        );
        vm.force_off().await.unwrap();
        vm = dst;
    }
    drop(meter);
    vm.force_off().await.unwrap();
}

/// A QEMU in `dir` waiting for `spec`'s memory on a loopback port (plain
/// TCP), and the stream's URI.
async fn plain_incoming(dir: &TestDir, spec: &VmSpec) -> (VmInstance, String) {
    let mut incoming = dir.launch_options();
    incoming.incoming_defer = true;
    let dst = VmInstance::launch(spec, &incoming, InstanceOptions::default())
        .await
        .unwrap();
    let uri = format!("tcp:127.0.0.1:{}", free_port());
    listen_incoming(dst.qmp(), &uri, None).await.unwrap();
    (dst, uri)
}

/// A plain memory stream of at most `max_bandwidth` bytes/s.
fn plain_settings(max_bandwidth: u64) -> OutgoingSettings {
    OutgoingSettings {
        max_downtime_ms: 300,
        max_bandwidth,
        tls: None,
    }
}
