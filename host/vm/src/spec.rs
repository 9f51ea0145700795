//! What a VM is made of: [`VmSpec`] and its validation.
//!
//! A spec is plain data (serde) so the daemon can store it in its replicated
//! state. [`VmSpec::validate`] checks everything that can be checked without
//! touching the host; errors name the field and the reason (DESIGN principle 7).

use std::collections::HashSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Most vCPUs accepted (QEMU's `pc` machine limit).
pub const MAX_VCPUS: u32 = 255;
/// Least memory accepted, in MiB.
pub const MIN_MEMORY_MIB: u64 = 16;
/// Most memory accepted, in MiB (a sanity bound; the daemon checks the host).
pub const MAX_MEMORY_MIB: u64 = 4 * 1024 * 1024;
/// Longest VM name.
pub const MAX_NAME_LEN: usize = 63;

/// A spec field that failed validation: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid VM spec: `{field}`: {reason}")]
pub struct SpecError {
    /// The field path, e.g. `disks[1].path`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl SpecError {
    pub(crate) fn new(field: impl Into<String>, reason: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// The chipset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MachineType {
    /// Intel Q35 (PCIe, AHCI). The default.
    #[default]
    Q35,
    /// Intel i440FX (PCI, PIIX IDE).
    Pc,
}

impl MachineType {
    pub fn qemu_name(self) -> &'static str {
        match self {
            MachineType::Q35 => "q35",
            MachineType::Pc => "pc",
        }
    }

    /// How many IDE devices the built-in controller takes.
    pub fn ide_slots(self) -> usize {
        match self {
            MachineType::Q35 => 6,
            MachineType::Pc => 4,
        }
    }
}

/// Boot firmware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Firmware {
    /// SeaBIOS. The default.
    #[default]
    Bios,
    /// OVMF, where installed (`/usr/share/OVMF`), with a per-VM variable store.
    Uefi,
}

/// Image format of a disk.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskFormat {
    #[default]
    Qcow2,
    Raw,
}

impl DiskFormat {
    pub fn qemu_driver(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
            DiskFormat::Raw => "raw",
        }
    }
}

/// How a disk is attached to the guest.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskBus {
    /// virtio-blk. The default; cannot carry a CD-ROM.
    #[default]
    Virtio,
    /// virtio-scsi.
    Scsi,
    /// The machine's IDE/AHCI controller.
    Ide,
}

/// Whether a disk is a hard disk or a CD-ROM.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMedia {
    #[default]
    Disk,
    /// Always read-only.
    Cdrom,
}

/// One disk. The i-th disk gets block node `disk<i>` (format layer),
/// `disk<i>-file` (protocol layer) and device id `disk<i>-dev`; with no direct
/// kernel boot, it also gets boot index i.
///
/// A `replicated` disk (an HA VM's disk with a synchronous replica, see
/// [`crate::replica::link`]) is instead a quorum node `disk<i>` (vote
/// threshold 2, reads from the first child) over the format node
/// `disk<i>-local` and a second child: at launch the placeholder
/// `disk<i>-alone` (a `null-co` node of the disk's size that accepts every
/// write), later the replica. Its device stops the guest on a write error
/// (`werror=stop`), so a write the replica did not take is never
/// acknowledged to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    /// Absolute path of the image.
    pub path: PathBuf,
    #[serde(default)]
    pub format: DiskFormat,
    #[serde(default)]
    pub bus: DiskBus,
    #[serde(default)]
    pub readonly: bool,
    #[serde(default)]
    pub media: DiskMedia,
    /// Whether the disk gets a synchronous replica (see above).
    #[serde(default)]
    pub replicated: bool,
}

impl DiskSpec {
    /// A read-write virtio qcow2 disk.
    pub fn qcow2(path: impl Into<PathBuf>) -> Self {
        DiskSpec {
            path: path.into(),
            format: DiskFormat::Qcow2,
            bus: DiskBus::Virtio,
            readonly: false,
            media: DiskMedia::Disk,
            replicated: false,
        }
    }

    /// A read-write virtio raw disk.
    pub fn raw(path: impl Into<PathBuf>) -> Self {
        DiskSpec {
            format: DiskFormat::Raw,
            ..DiskSpec::qcow2(path)
        }
    }

    /// An IDE CD-ROM with a raw (ISO) image.
    pub fn cdrom(path: impl Into<PathBuf>) -> Self {
        DiskSpec {
            path: path.into(),
            format: DiskFormat::Raw,
            bus: DiskBus::Ide,
            readonly: true,
            media: DiskMedia::Cdrom,
            replicated: false,
        }
    }

    /// Whether the guest may write (never for a CD-ROM).
    pub fn is_readonly(&self) -> bool {
        self.readonly || self.media == DiskMedia::Cdrom
    }

    /// The size the guest sees: a qcow2 image's virtual size (from its
    /// header), a raw image's length. A replicated disk's placeholder must
    /// have it, as every child of a quorum has the same size.
    pub fn virtual_size(&self) -> std::io::Result<u64> {
        use std::io::Read as _;
        match self.format {
            DiskFormat::Raw => Ok(std::fs::metadata(&self.path)?.len()),
            DiskFormat::Qcow2 => {
                let mut header = [0u8; 32];
                std::fs::File::open(&self.path)?.read_exact(&mut header)?;
                if header[..4] != *b"QFI\xfb" {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "not a qcow2 image (no QFI\\xfb magic)",
                    ));
                }
                let mut size = [0u8; 8];
                size.copy_from_slice(&header[24..32]);
                Ok(u64::from_be_bytes(size))
            }
        }
    }
}

/// A MAC address, written `52:54:00:12:34:56`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// A random, locally administered unicast address with QEMU's `52:54:00`
    /// prefix.
    pub fn random() -> MacAddr {
        let r = Uuid::new_v4();
        let b = r.as_bytes();
        MacAddr([0x52, 0x54, 0x00, b[0], b[1], b[2]])
    }

    /// Whether the address may be given to a NIC (unicast, not all zeroes).
    pub fn is_valid_unicast(&self) -> bool {
        self.0[0] & 1 == 0 && self.0 != [0; 6]
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl FromStr for MacAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 6 {
            return Err(format!(
                "{s:?} is not a MAC address (six hex pairs, colon-separated)"
            ));
        }
        let mut out = [0u8; 6];
        for (i, p) in parts.iter().enumerate() {
            if p.len() != 2 {
                return Err(format!("{s:?} is not a MAC address: bad octet {p:?}"));
            }
            out[i] = u8::from_str_radix(p, 16)
                .map_err(|_| format!("{s:?} is not a MAC address: bad octet {p:?}"))?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Emulated NIC model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NicModel {
    #[default]
    VirtioNetPci,
    E1000,
}

impl NicModel {
    pub fn qemu_driver(self) -> &'static str {
        match self {
            NicModel::VirtioNetPci => "virtio-net-pci",
            NicModel::E1000 => "e1000",
        }
    }
}

/// Where a NIC's traffic goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum NicBackend {
    /// An existing tap device (created by the network layer; QEMU attaches to it,
    /// runs no scripts).
    Tap { ifname: String },
    /// No backend: the NIC exists but its cable is unplugged.
    #[default]
    None,
}

/// One NIC. The i-th NIC gets netdev id `net<i>` and device id `net<i>-dev`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    pub mac: MacAddr,
    #[serde(default)]
    pub backend: NicBackend,
    #[serde(default)]
    pub model: NicModel,
}

/// Direct kernel boot (no bootloader).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelBoot {
    /// Absolute path of the kernel image.
    pub kernel: PathBuf,
    /// Absolute path of the initramfs.
    #[serde(default)]
    pub initrd: Option<PathBuf>,
    /// Kernel command line.
    #[serde(default)]
    pub append: Option<String>,
}

/// Where the first serial port goes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "type")]
pub enum SerialSpec {
    /// A Unix socket `<run_dir>/<id>.serial` QEMU listens on (`server=on,wait=off`):
    /// the daemon attaches, captures and detaches at will. The default.
    #[default]
    Socket,
    /// Append to a file (absolute path).
    File { path: PathBuf },
    /// No serial port.
    None,
}

/// Everything needed to start one VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    /// Display name: 1 to 63 characters of `A-Z a-z 0-9 . _ -`, starting with a
    /// letter or digit.
    pub name: String,
    /// Stable identity; also names the VM's runtime files.
    pub uuid: Uuid,
    pub vcpus: u32,
    pub memory_mib: u64,
    #[serde(default)]
    pub machine: MachineType,
    #[serde(default)]
    pub firmware: Firmware,
    /// Per-VM UEFI variable store. Created from OVMF's template when missing.
    /// Defaults to `<run_dir>/<id>.OVMF_VARS.fd`; a daemon should point it at
    /// persistent storage so boot entries survive.
    #[serde(default)]
    pub uefi_vars: Option<PathBuf>,
    /// QEMU `-cpu` model; QEMU's default when unset.
    #[serde(default)]
    pub cpu_model: Option<String>,
    #[serde(default)]
    pub disks: Vec<DiskSpec>,
    #[serde(default)]
    pub nics: Vec<NicSpec>,
    #[serde(default)]
    pub kernel: Option<KernelBoot>,
    #[serde(default)]
    pub serial: SerialSpec,
}

impl VmSpec {
    /// A minimal spec: 1 vCPU, `memory_mib`, q35, BIOS, no disks, no NICs,
    /// serial on a socket, a fresh UUID.
    pub fn new(name: impl Into<String>, memory_mib: u64) -> VmSpec {
        VmSpec {
            name: name.into(),
            uuid: Uuid::new_v4(),
            vcpus: 1,
            memory_mib,
            machine: MachineType::default(),
            firmware: Firmware::default(),
            uefi_vars: None,
            cpu_model: None,
            disks: Vec::new(),
            nics: Vec::new(),
            kernel: None,
            serial: SerialSpec::default(),
        }
    }

    /// The id that names this VM's runtime files (its UUID, hyphenated).
    pub fn id(&self) -> String {
        self.uuid.hyphenated().to_string()
    }

    /// Checks the spec; the first problem found is returned, naming its field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.uuid.is_nil() {
            return Err(SpecError::new("uuid", "must not be the nil UUID"));
        }
        if self.vcpus == 0 || self.vcpus > MAX_VCPUS {
            return Err(SpecError::new(
                "vcpus",
                format!("{} is out of range: must be 1 to {MAX_VCPUS}", self.vcpus),
            ));
        }
        if self.memory_mib < MIN_MEMORY_MIB || self.memory_mib > MAX_MEMORY_MIB {
            return Err(SpecError::new(
                "memory_mib",
                format!(
                    "{} MiB is out of range: must be {MIN_MEMORY_MIB} to {MAX_MEMORY_MIB} MiB",
                    self.memory_mib
                ),
            ));
        }
        if let Some(vars) = &self.uefi_vars {
            check_abs_path("uefi_vars", vars)?;
            if self.firmware != Firmware::Uefi {
                return Err(SpecError::new(
                    "uefi_vars",
                    "is only meaningful with firmware \"uefi\"",
                ));
            }
        }
        if let Some(cpu) = &self.cpu_model {
            if cpu.is_empty()
                || !cpu
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.+=,".contains(c))
            {
                return Err(SpecError::new(
                    "cpu_model",
                    format!("{cpu:?} is not a CPU model name"),
                ));
            }
        }

        let mut seen_paths: HashSet<PathBuf> = HashSet::new();
        let mut ide = 0usize;
        for (i, d) in self.disks.iter().enumerate() {
            let field = format!("disks[{i}].path");
            check_abs_path(&field, &d.path)?;
            if !seen_paths.insert(normalize(&d.path)) {
                return Err(SpecError::new(
                    field,
                    format!("{} is used by another disk", d.path.display()),
                ));
            }
            if d.media == DiskMedia::Cdrom && d.bus == DiskBus::Virtio {
                return Err(SpecError::new(
                    format!("disks[{i}].bus"),
                    "a cdrom needs bus \"scsi\" or \"ide\" (virtio-blk has no CD-ROM)",
                ));
            }
            if d.bus == DiskBus::Ide && d.readonly && d.media == DiskMedia::Disk {
                return Err(SpecError::new(
                    format!("disks[{i}].readonly"),
                    "QEMU's IDE hard disks cannot be read-only; use bus \"virtio\" or \"scsi\"",
                ));
            }
            if d.bus == DiskBus::Ide {
                ide += 1;
                if ide > self.machine.ide_slots() {
                    return Err(SpecError::new(
                        format!("disks[{i}].bus"),
                        format!(
                            "machine {} has only {} IDE slots",
                            self.machine.qemu_name(),
                            self.machine.ide_slots()
                        ),
                    ));
                }
            }
        }

        let mut macs = HashSet::new();
        let mut taps = HashSet::new();
        for (i, n) in self.nics.iter().enumerate() {
            if !n.mac.is_valid_unicast() {
                return Err(SpecError::new(
                    format!("nics[{i}].mac"),
                    format!("{} is not a unicast address", n.mac),
                ));
            }
            if !macs.insert(n.mac) {
                return Err(SpecError::new(
                    format!("nics[{i}].mac"),
                    format!("{} is used by another NIC", n.mac),
                ));
            }
            if let NicBackend::Tap { ifname } = &n.backend {
                let field = format!("nics[{i}].backend.ifname");
                validate_ifname(&field, ifname)?;
                if !taps.insert(ifname.clone()) {
                    return Err(SpecError::new(
                        field,
                        format!("{ifname:?} is used by another NIC"),
                    ));
                }
            }
        }

        if let Some(k) = &self.kernel {
            check_abs_path("kernel.kernel", &k.kernel)?;
            if let Some(initrd) = &k.initrd {
                check_abs_path("kernel.initrd", initrd)?;
            }
            if let Some(append) = &k.append {
                if append.contains('\0') || append.contains('\n') {
                    return Err(SpecError::new(
                        "kernel.append",
                        "must not contain NUL or newline characters",
                    ));
                }
            }
        }

        if let SerialSpec::File { path } = &self.serial {
            check_abs_path("serial.path", path)?;
        }
        Ok(())
    }
}

/// Checks a VM name: 1-63 characters of `A-Z a-z 0-9 . _ -`, starting with a
/// letter or digit; no `/`, no `..`.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let field = "name";
    if name.is_empty() {
        return Err(SpecError::new(field, "must not be empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SpecError::new(
            field,
            format!("is {} characters long; at most {MAX_NAME_LEN}", name.len()),
        ));
    }
    if name.contains('/') {
        return Err(SpecError::new(
            field,
            format!("{name:?} must not contain '/'"),
        ));
    }
    if name.contains("..") {
        return Err(SpecError::new(
            field,
            format!("{name:?} must not contain \"..\""),
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(SpecError::new(
            field,
            format!("{name:?} contains {c:?}; allowed are letters, digits, '.', '_' and '-'"),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(SpecError::new(
            field,
            format!("{name:?} must start with a letter or digit"),
        ));
    }
    Ok(())
}

fn validate_ifname(field: &str, ifname: &str) -> Result<(), SpecError> {
    // Linux: IFNAMSIZ 16 including the NUL; no '/', whitespace or ':'.
    if ifname.is_empty() || ifname.len() > 15 {
        return Err(SpecError::new(
            field,
            format!("{ifname:?} must be 1 to 15 characters"),
        ));
    }
    if ifname == "." || ifname == ".." {
        return Err(SpecError::new(field, format!("{ifname:?} is not allowed")));
    }
    if let Some(c) = ifname
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(SpecError::new(
            field,
            format!("{ifname:?} contains {c:?}; allowed are letters, digits, '-', '_', '.'"),
        ));
    }
    Ok(())
}

/// Checks that `path` is absolute and has no `..` component.
pub(crate) fn check_abs_path(field: &str, path: &Path) -> Result<(), SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::new(
            field,
            format!(
                "{} is relative; an absolute path is required (QEMU runs with / as its working directory)",
                path.display()
            ),
        ));
    }
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(SpecError::new(
            field,
            format!("{} must not contain \"..\"", path.display()),
        ));
    }
    if path.as_os_str().as_encoded_bytes().contains(&0) {
        return Err(SpecError::new(field, "must not contain a NUL byte"));
    }
    Ok(())
}

/// Lexical normalisation (`/a/./b//c` -> `/a/b/c`) for duplicate detection.
fn normalize(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| *c != Component::CurDir)
        .collect()
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
