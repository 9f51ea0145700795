//! Shared helpers of the QEMU integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use nasvisor_vm::{
    Accel, DiskSpec, InstanceOptions, KernelBoot, LaunchOptions, VmInstance, VmSpec,
};

/// What the test guest does after printing its banner (see `guest.S`).
#[derive(Debug, Clone, Copy)]
pub enum GuestMode {
    /// Echo serial input; ignore ACPI.
    Idle = 0,
    /// Power off at once.
    PowerOff = 1,
    /// Panic at once (pvpanic).
    Panic = 2,
    /// Echo serial input; power off on the ACPI power button.
    AcpiAware = 3,
}

pub const BANNER: &[u8] = b"NASVISOR-GUEST-UP";
pub const POWEROFF: &[u8] = b"NASVISOR-GUEST-POWEROFF";
pub const PANIC: &[u8] = b"NASVISOR-GUEST-PANIC";

/// The test guest's boot sector code, assembled from `guest.S`.
const GUEST_CODE: &[u8] = &[
    0xfa, 0x31, 0xc0, 0x8e, 0xd8, 0x8e, 0xd0, 0xbc, 0x00, 0x7c, 0xba, 0xfb, //
    0x03, 0xb0, 0x80, 0xee, 0xba, 0xf8, 0x03, 0xb0, 0x01, 0xee, 0xba, 0xf9, //
    0x03, 0x30, 0xc0, 0xee, 0xba, 0xfb, 0x03, 0xb0, 0x03, 0xee, 0xba, 0xfa, //
    0x03, 0xb0, 0x07, 0xee, 0xba, 0xf9, 0x03, 0xb0, 0x01, 0xee, 0xba, 0xfc, //
    0x03, 0xb0, 0x0b, 0xee, 0xe4, 0x21, 0x24, 0xef, 0xe6, 0x21, 0x8a, 0x1e, //
    0xb0, 0x7d, 0x80, 0xfb, 0x03, 0x75, 0x07, 0xba, 0x02, 0x06, 0xb8, 0x00, //
    0x01, 0xef, 0xbe, 0xb7, 0x7c, 0xe8, 0x5c, 0x00, 0x80, 0xfb, 0x01, 0x74, //
    0x27, 0x80, 0xfb, 0x02, 0x74, 0x32, 0xfb, 0xf4, 0xfa, 0x80, 0xfb, 0x03, //
    0x75, 0x09, 0xba, 0x00, 0x06, 0xed, 0xa9, 0x00, 0x01, 0x75, 0x11, 0xba, //
    0xfd, 0x03, 0xec, 0xa8, 0x01, 0x74, 0xe7, 0xba, 0xf8, 0x03, 0xec, 0xe8, //
    0x21, 0x00, 0xeb, 0xef, 0xbe, 0xcb, 0x7c, 0xe8, 0x2a, 0x00, 0xba, 0x04, //
    0x06, 0xb8, 0x00, 0x20, 0xef, 0xf4, 0xeb, 0xfd, 0xbe, 0xe5, 0x7c, 0xe8, //
    0x1a, 0x00, 0xba, 0x05, 0x05, 0xb0, 0x01, 0xee, 0xf4, 0xeb, 0xfd, 0x52, //
    0x50, 0xba, 0xfd, 0x03, 0xec, 0xa8, 0x20, 0x74, 0xfb, 0x58, 0xba, 0xf8, //
    0x03, 0xee, 0x5a, 0xc3, 0xac, 0x84, 0xc0, 0x74, 0x05, 0xe8, 0xe7, 0xff, //
    0xeb, 0xf6, 0xc3, 0x4e, 0x41, 0x53, 0x56, 0x49, 0x53, 0x4f, 0x52, 0x2d, //
    0x47, 0x55, 0x45, 0x53, 0x54, 0x2d, 0x55, 0x50, 0x0d, 0x0a, 0x00, 0x4e, //
    0x41, 0x53, 0x56, 0x49, 0x53, 0x4f, 0x52, 0x2d, 0x47, 0x55, 0x45, 0x53, //
    0x54, 0x2d, 0x50, 0x4f, 0x57, 0x45, 0x52, 0x4f, 0x46, 0x46, 0x0d, 0x0a, //
    0x00, 0x4e, 0x41, 0x53, 0x56, 0x49, 0x53, 0x4f, 0x52, 0x2d, 0x47, 0x55, //
    0x45, 0x53, 0x54, 0x2d, 0x50, 0x41, 0x4e, 0x49, 0x43, 0x0d, 0x0a, //
];

/// Offset of the mode byte in the boot sector.
const MODE_OFFSET: usize = 0x1b0;

/// The 512-byte boot sector for `mode`.
pub fn boot_sector(mode: GuestMode) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    b[..GUEST_CODE.len()].copy_from_slice(GUEST_CODE);
    b[MODE_OFFSET] = mode as u8;
    b[510] = 0x55;
    b[511] = 0xaa;
    b
}

/// Writes a 1 MiB raw disk image whose boot sector is the test guest.
/// (SeaBIOS will not boot a disk of a single sector.)
pub fn write_guest_image(path: &Path, mode: GuestMode) {
    let mut img = boot_sector(mode);
    img.resize(1024 * 1024, 0);
    std::fs::write(path, img).unwrap();
}

/// Fails loudly when QEMU is missing: `scripts/setup.sh` installs it.
pub fn require_qemu() {
    let ok = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "qemu-system-x86_64 is not installed; run scripts/setup.sh (these tests need a real QEMU)"
    );
}

/// A temp run directory whose QEMUs are killed (by pid, after checking that the
/// pid is a QEMU using a QMP socket in this directory) when the test ends,
/// whether it passed or panicked.
pub struct TestDir {
    pub dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        require_qemu();
        TestDir {
            dir: tempfile::Builder::new().prefix("nv-vm-").tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Launch options for this directory under TCG.
    pub fn launch_options(&self) -> LaunchOptions {
        let mut o = LaunchOptions::new(self.path(), Accel::Tcg);
        o.launch_timeout = Duration::from_secs(60);
        o
    }

    /// A 64 MiB VM booting the test guest in `mode` from a virtio disk.
    pub fn guest_spec(&self, name: &str, mode: GuestMode) -> VmSpec {
        let img = self.file(&format!("{name}.img"));
        write_guest_image(&img, mode);
        let mut spec = VmSpec::new(name, 64);
        spec.disks.push(DiskSpec::raw(img));
        spec
    }

    pub async fn launch(&self, spec: &VmSpec) -> VmInstance {
        self.launch_with(spec, InstanceOptions::default()).await
    }

    pub async fn launch_with(&self, spec: &VmSpec, options: InstanceOptions) -> VmInstance {
        VmInstance::launch(spec, &self.launch_options(), options)
            .await
            .unwrap_or_else(|e| panic!("launch of {} failed: {e}", spec.name))
    }

    /// Kills every QEMU and replica server whose pidfile is in this
    /// directory (by pid, once its command line shows it is that process).
    pub fn kill_all(&self) {
        let Ok(entries) = std::fs::read_dir(self.path()) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().and_then(|x| x.to_str()) != Some("pid") {
                continue;
            }
            let Ok(pid) = nasvisor_vm::proc::read_pidfile(&p) else {
                continue;
            };
            let qmp = p.with_extension("qmp");
            // A VM's QEMU, or a replica server (`qemu-storage-daemon`,
            // whose command line names its pidfile).
            let replica_server = nasvisor_vm::proc::cmdline(pid)
                .is_ok_and(|args| args.iter().any(|a| a.contains(p.to_str().unwrap())));
            if replica_server || nasvisor_vm::proc::verify_qemu(pid, qmp.to_str().unwrap()).is_ok()
            {
                kill_pid(pid);
            }
        }
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Live processes whose command line mentions `dir` (QEMUs of a test dir).
pub fn processes_using(dir: &Path) -> Vec<i32> {
    let needle = dir.to_str().unwrap();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if let Ok(args) = nasvisor_vm::proc::cmdline(pid) {
            if args.iter().any(|a| a.contains(needle)) && nasvisor_vm::proc::is_alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

/// SIGKILL to one pid.
pub fn kill_pid(pid: i32) {
    if let Some(p) = rustix::process::Pid::from_raw(pid) {
        let _ = rustix::process::kill_process(p, rustix::process::Signal::KILL);
    }
}

/// Waits until `pid` is gone (or a zombie), up to `timeout`.
pub async fn wait_pid_gone(pid: i32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !nasvisor_vm::proc::is_alive(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    !nasvisor_vm::proc::is_alive(pid)
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
pub fn ppid(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Generous timeout for anything a TCG guest must do on a loaded machine.
pub const SLOW: Duration = Duration::from_secs(60);

/// Asserts the guest's boot sector matches `guest.S` when binutils exist.
pub fn check_guest_source() {
    let src = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/common/guest.S");
    if let Some(bin) = nasvisor_vm::asm::assemble_flat(std::path::Path::new(src), true) {
        assert_eq!(bin, boot_sector(GuestMode::Idle));
    }
}

/// A free TCP port on 127.0.0.1 (for a server started right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A CA, a server certificate for `node-2` and a client one for `node-1`,
/// in QEMU's file names: `<dir>/server` and `<dir>/client`.
pub fn test_certificates(dir: &Path) -> (PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-keyout",
        "ca-key.pem",
        "-out",
        "ca-cert.pem",
        "-days",
        "2",
        "-subj",
        "/CN=test-ca",
    ]);
    let mut dirs = Vec::new();
    for (endpoint, cn) in [("server", "node-2"), ("client", "node-1")] {
        let d = dir.join(endpoint);
        std::fs::create_dir_all(&d).unwrap();
        let key = format!("{endpoint}/{endpoint}-key.pem");
        let csr = format!("{endpoint}.csr");
        run(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={cn}/O=nasvisor"),
        ]);
        let ext = dir.join(format!("{endpoint}.ext"));
        std::fs::write(
            &ext,
            format!(
                "subjectAltName=DNS:{cn}\nextendedKeyUsage={}\n",
                if endpoint == "server" {
                    "serverAuth"
                } else {
                    "clientAuth"
                }
            ),
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca-cert.pem",
            "-CAkey",
            "ca-key.pem",
            "-CAcreateserial",
            "-days",
            "2",
            "-out",
            &format!("{endpoint}/{endpoint}-cert.pem"),
            "-extfile",
            ext.to_str().unwrap(),
        ]);
        std::fs::copy(dir.join("ca-cert.pem"), d.join("ca-cert.pem")).unwrap();
        dirs.push(d);
    }
    (dirs[0].clone(), dirs[1].clone())
}

/// A new empty qcow2 image of `size` at `path`.
pub fn qcow2(path: &Path, size: &str) {
    let out = std::process::Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2"])
        .arg(path)
        .arg(size)
        .output()
        .expect("qemu-img is installed");
    assert!(out.status.success(), "{out:?}");
}

/// `qemu-io` on an image; its output.
pub fn qemu_io(image: &Path, ops: &[&str]) -> String {
    let mut c = std::process::Command::new("qemu-io");
    c.args(["-f", "qcow2"]);
    for op in ops {
        c.args(["-c", op]);
    }
    let out = c.arg(image).output().expect("qemu-io is installed");
    assert!(out.status.success(), "qemu-io {ops:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The guest image's kernel and initrd (built by
/// scripts/build-guest-image.sh; NASVISOR_GUEST_DIR overrides where), or
/// `None` with a note when they are missing.
pub fn guest_kernel(append: &str) -> Option<KernelBoot> {
    let dir = std::env::var_os("NASVISOR_GUEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/guest"))
        });
    let kernel = dir.join("vmlinuz");
    let initrd = dir.join("initrd.img");
    if !kernel.exists() || !initrd.exists() {
        eprintln!(
            "skipping: {} or {} does not exist (built by scripts/build-guest-image.sh)",
            kernel.display(),
            initrd.display()
        );
        return None;
    }
    Some(KernelBoot {
        kernel: kernel.canonicalize().unwrap(),
        initrd: Some(initrd.canonicalize().unwrap()),
        append: Some(append.into()),
    })
}
