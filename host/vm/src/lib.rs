//! QEMU processes driven over QMP: launch, control, events, console, reattach.
//!
//! The mechanism layer for VMs in nasvisord (no policy, no HTTP):
//!
//! - [`qmp`]: an async QMP client (greeting, capability negotiation,
//!   concurrent commands matched by id, an event broadcast, typed helpers).
//! - [`spec`]: [`VmSpec`], what a VM is made of, with validation that names the
//!   offending field.
//! - [`launch`]: the spec rendered to a QEMU command line and started
//!   daemonized, so QEMU outlives the daemon (DESIGN principle 4).
//! - [`instance`]: [`VmInstance`], a handle to a running VM: launch or
//!   [`VmInstance::attach`] after a daemon restart, state from QMP events,
//!   crash detection through a pidfd, shutdown/force-off/reboot/pause/resume.
//! - [`migration`]: the mechanism of a live migration (disk mirrors onto
//!   NBD exports, the memory stream, the target's preparation), waiting on
//!   QMP events.
//! - [`console`]: the serial console captured into a bounded on-disk log and
//!   streamed live.
//! - [`accel`]: KVM only when a probe guest actually runs under it in time,
//!   TCG otherwise.
//! - [`proc`]: the QEMU process by pid (pidfd, `/proc` checks). Never by name.

pub mod accel;
#[doc(hidden)]
pub mod asm;
pub mod console;
pub mod instance;
pub mod launch;
pub mod migration;
pub mod proc;
pub mod qmp;
pub mod replica;
pub mod spec;

pub use accel::{probe as probe_accel, Accel, AccelChoice, ProbeOptions};
pub use console::{Console, ConsoleOptions};
pub use instance::{InstanceOptions, ShutdownOutcome, VmError, VmInstance, VmState};
pub use launch::{LaunchError, LaunchOptions, RunPaths, SpawnHook};
pub use migration::MigrateError;
pub use qmp::{EventKind, QmpClient, QmpError, QmpEvent};
pub use spec::{
    DiskBus, DiskFormat, DiskMedia, DiskSpec, Firmware, KernelBoot, MacAddr, MachineType,
    NicBackend, NicModel, NicSpec, SerialSpec, SpecError, VmSpec,
};
