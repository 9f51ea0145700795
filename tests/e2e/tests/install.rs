//! The install path, end to end with real parts: the signed os-installer
//! component plans the install of the bundled guest image, the plan's seed
//! becomes a `cidata` VFAT volume, the disk is a linked clone of the image in
//! the library, QEMU boots it under TCG, and the guest reports on its serial
//! console the hostname and user from the seed, then the plan's ready marker.

use nasvisor_plugin_host::testkit::{build_signing_key, plugin_bytes, workspace_root};
use nasvisor_plugin_host::{
    DecisionInput, DecisionOutput, DecisionSource, PolicyHost, Runtime, RuntimeConfig,
};
use nasvisor_plugin_sdk::prelude::*;
use nasvisor_storage::{seed::build_nocloud_seed, ImageLibrary, ImageSpec, Pool};
use nasvisor_vm::{Accel, DiskSpec, InstanceOptions, LaunchOptions, VmInstance, VmSpec};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn guest_image() -> (std::path::PathBuf, serde_json::Value) {
    let dir = workspace_root().join("target/guest");
    let meta = dir.join("guest-image.json");
    let text = std::fs::read_to_string(&meta).unwrap_or_else(|e| {
        panic!(
            "{}: {e}: run scripts/setup.sh (it builds the guest image)",
            meta.display()
        )
    });
    (
        dir.join("nasvisor-mini.qcow2"),
        serde_json::from_str(&text).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bundled_image_installs_and_reports_its_seed() {
    let (image_file, image_json) = guest_image();
    let tmp = tempfile::tempdir().unwrap();

    // 1. The image library and a pool.
    let lib = ImageLibrary::open(&tmp.path().join("images")).unwrap();
    let spec = ImageSpec {
        os_family: "linux".into(),
        os_variant: "busybox".into(),
        cloud_init: true,
        firmware: "bios".into(),
        ready_marker: image_json["ready-marker"].as_str().map(str::to_string),
    };
    let image = lib
        .add_file("nasvisor-mini", &image_file, spec, |_, _| {})
        .unwrap();
    std::fs::create_dir(tmp.path().join("pool")).unwrap();
    let pool = Pool::open("default", &tmp.path().join("pool")).unwrap();

    // 2. The plan, from the signed os-installer component.
    let rt = Arc::new(
        Runtime::new(
            RuntimeConfig::default(),
            vec![build_signing_key().verifying_key()],
        )
        .unwrap(),
    );
    let host = PolicyHost::new(rt.clone(), None);
    host.install(
        rt.load(&plugin_bytes("nasvisor-os-installer"), None, vec![])
            .unwrap(),
    );
    let hostname = format!("e2e-{}", std::process::id());
    // Timed from here: create (plan, disk, seed) + install + first boot.
    let created = Instant::now();
    let decision = host.decide(DecisionInput::PlanInstall {
        image: ImageMeta {
            id: image.name.clone(),
            name: image.name.clone(),
            format: ImageFormat::Qcow2,
            os_family: image.spec.os_family.clone(),
            os_variant: image.spec.os_variant.clone(),
            cloud_init: true,
            firmware: Firmware::Bios,
            virtual_size_bytes: image.virtual_size,
            ready_marker: image.spec.ready_marker.clone(),
        },
        request: InstallRequest {
            vm_name: "e2e".into(),
            hostname: hostname.clone(),
            users: vec![UserSpec {
                name: "admin".into(),
                ssh_authorized_keys: vec![
                    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl admin@e2e".into(),
                ],
                sudo: true,
                ..Default::default()
            }],
            disk_size_gib: 1,
            ..Default::default()
        },
        pool_free_bytes: Some(pool.usage().unwrap().free_bytes),
    });
    assert!(
        matches!(decision.source, DecisionSource::Plugin { .. }),
        "{:?}",
        decision.source
    );
    let plan = match decision.answer {
        Ok(DecisionOutput::Plan(p)) => p,
        other => panic!("no plan: {other:?}"),
    };
    let marker = match &plan.completion {
        Completion::SerialMarker(m) => m.clone(),
        other => panic!("the default plan waits for a serial marker, got {other:?}"),
    };

    // 3. Disk and seed as the plan says.
    assert_eq!(plan.disk.method, DiskMethod::CloneBacking);
    let disk = pool
        .create_overlay(
            "e2e-root",
            &image.path,
            plan.disk.resize_gib.map(|g| g << 30),
        )
        .unwrap();
    let seed_path = tmp.path().join("pool/e2e-seed.img");
    let files: Vec<(&str, &str)> = plan
        .seed
        .iter()
        .map(|f| (f.name.as_str(), f.contents.as_str()))
        .collect();
    build_nocloud_seed(&files, &seed_path).unwrap();

    // 4. Boot under TCG and watch the console.
    let mut vm = VmSpec::new("e2e", 256);
    vm.disks = vec![DiskSpec::qcow2(&disk.path), DiskSpec::raw(&seed_path)];
    let run_dir = tmp.path().join("run");
    std::fs::create_dir(&run_dir).unwrap();
    let prepared = created.elapsed();
    let inst = VmInstance::launch(
        &vm,
        &LaunchOptions::new(&run_dir, Accel::Tcg),
        InstanceOptions::default(),
    )
    .await
    .expect("QEMU starts");
    // Kill QEMU (by its pid) before any assertion can fail.
    let out = match inst.console() {
        Some(console) => {
            console
                .wait_for_output(marker.as_bytes(), Duration::from_secs(120))
                .await
        }
        None => Err(b"the console was not captured".to_vec()),
    };
    let elapsed = created.elapsed();
    let _ = inst.kill().await;
    let out = String::from_utf8_lossy(&out.unwrap_or_else(|partial| {
        panic!(
            "no ready marker within 120 s; console:\n{}",
            String::from_utf8_lossy(&partial)
        )
    }))
    .to_string();
    assert!(
        out.contains(&format!("NASVISOR-HOSTNAME={hostname}")),
        "{out}"
    );
    assert!(out.contains("NASVISOR-USER admin"), "{out}");
    eprintln!("plan + disk + seed: {prepared:?}");
    eprintln!("install + first boot to the ready marker: {elapsed:?}");
}
