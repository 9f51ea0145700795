//! Component glue: wit-bindgen bindings for the one world a plugin crate
//! enables, conversions between the generated types and [`crate::types`], and
//! the `export_*!` macros. Only compiled for `wasm32`; natively the export
//! macros expand to nothing.

/// Converts a wit-bindgen generated value into its SDK form and back.
pub trait Conv<T> {
    fn conv(self) -> T;
}

macro_rules! conv_identity {
    ($($t:ty),*) => { $(impl Conv<$t> for $t { #[inline] fn conv(self) -> $t { self } })* };
}
conv_identity!(String, bool, u8, u32, u64);

impl<A: Conv<B>, B> Conv<Vec<B>> for Vec<A> {
    #[inline]
    fn conv(self) -> Vec<B> {
        self.into_iter().map(Conv::conv).collect()
    }
}

impl<A: Conv<B>, B> Conv<Option<B>> for Option<A> {
    #[inline]
    fn conv(self) -> Option<B> {
        self.map(Conv::conv)
    }
}

impl<A: Conv<B>, B, E1: Conv<E2>, E2> Conv<Result<B, E2>> for Result<A, E1> {
    #[inline]
    fn conv(self) -> Result<B, E2> {
        match self {
            Ok(v) => Ok(v.conv()),
            Err(e) => Err(e.conv()),
        }
    }
}

/// Conversions in both directions between two records with the same fields.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_record {
    ($a:path, $b:path { $($f:ident),* $(,)? }) => {
        impl $crate::guest::Conv<$b> for $a {
            #[inline]
            fn conv(self) -> $b { $b { $($f: $crate::guest::Conv::conv(self.$f)),* } }
        }
        impl $crate::guest::Conv<$a> for $b {
            #[inline]
            fn conv(self) -> $a { $a { $($f: $crate::guest::Conv::conv(self.$f)),* } }
        }
    };
}

/// Conversions in both directions between two enums or variants with the
/// same cases; `V(_)` marks a case with a payload.
#[doc(hidden)]
#[macro_export]
macro_rules! __conv_cases {
    ($a:ident, $b:ty { $($v:ident $(($p:tt))?),* $(,)? }) => {
        impl $crate::guest::Conv<$b> for $a {
            #[inline]
            fn conv(self) -> $b {
                type B = $b;
                match self { $($a::$v $(($p))? => B::$v $(($crate::guest::Conv::conv($p)))?),* }
            }
        }
        impl $crate::guest::Conv<$a> for $b {
            #[inline]
            fn conv(self) -> $a {
                type B = $b;
                match self { $(B::$v $(($p))? => $a::$v $(($crate::guest::Conv::conv($p)))?),* }
            }
        }
    };
}

/// Conversions for every type of `types.wit`, for the bindings module `$m`.
#[cfg(target_arch = "wasm32")]
macro_rules! types_conversions {
    ($m:ident) => {
        mod conv_types {
            use super::$m::nasvisor::plugin::types as w;
            use crate::types as s;
            use w::*;
            crate::__conv_record!(w::Resources, s::Resources { vcpus, memory_mib, storage_gib });
            crate::__conv_cases!(HostHealth, s::HostHealth { Healthy, Degraded, Unreachable, Fenced, Maintenance });
            crate::__conv_cases!(ShaRole, s::ShaRole { None, Primary, Secondary });
            crate::__conv_record!(w::Label, s::Label { key, value });
            crate::__conv_record!(w::HostInfo, s::HostInfo {
                id, name, capacity, free, health, health_reasons, labels, sha_role, cordoned
            });
            crate::__conv_cases!(VmState, s::VmState {
                Stopped, Starting, Running, Paused, Migrating, ShuttingDown, Crashed, Panicked, Failed
            });
            crate::__conv_record!(w::HaAssignment, s::HaAssignment { active, passive });
            crate::__conv_record!(w::PlacementConstraints, s::PlacementConstraints {
                pinned_hosts, affinity, anti_affinity, required_labels
            });
            crate::__conv_record!(w::VmInfo, s::VmInfo {
                id, name, resources, state, host, ha_enabled, ha, constraints
            });
            crate::__conv_record!(w::ClusterView, s::ClusterView { hosts, vms, has_quorum, now_ms });
            crate::__conv_record!(w::HostDegraded, s::HostDegraded { host, reasons });
            crate::__conv_record!(w::HeartbeatMissed, s::HeartbeatMissed { host, missed_ms });
            crate::__conv_record!(w::VmFault, s::VmFault { vm, host, recent_faults, detail });
            crate::__conv_record!(w::QuorumChange, s::QuorumChange { has_quorum, online_hosts, total_hosts });
            crate::__conv_cases!(ReplicationState, s::ReplicationState { InSync, Syncing, OutOfSync, Unknown });
            crate::__conv_record!(w::ShaPairState, s::ShaPairState {
                resource_name, local_role, peer_role, peer_connected, replication, sync_percent, split_brain, switching
            });
            crate::__conv_record!(w::ShaChange, s::ShaChange { host, state });
            crate::__conv_cases!(Event, s::Event {
                HeartbeatMissed(x), HostDegraded(x), HostRecovered(x), HostFenced(x),
                VmCrashed(x), GuestPanicked(x), QuorumChanged(x), ShaStateChanged(x)
            });
            crate::__conv_cases!(Severity, s::Severity { Info, Warning, Critical });
            crate::__conv_record!(w::VmMove, s::VmMove { vm, target, reason });
            crate::__conv_record!(w::VmRestart, s::VmRestart { vm, delay_ms, reason });
            crate::__conv_record!(w::FenceHost, s::FenceHost { host, reason });
            crate::__conv_record!(w::Hold, s::Hold { delay_ms, reason });
            crate::__conv_record!(w::Notice, s::Notice { severity, message });
            crate::__conv_cases!(HaAction, s::HaAction {
                Switchover(x), Failover(x), Restart(x), Fence(x), Hold(x), Notify(x)
            });
            crate::__conv_cases!(ErrorCode, s::ErrorCode { InvalidInput, NoSolution, BadSettings, Internal });
            crate::__conv_record!(w::PluginError, s::PluginError { code, message });
        }

        /// The [`crate::Env`] of a component: calls the WIT `host` imports.
        #[derive(Debug, Default, Clone, Copy)]
        pub struct GuestEnv;

        impl crate::Env for GuestEnv {
            fn log(&self, level: crate::LogLevel, message: &str, fields: &[(&str, &str)]) {
                use $m::nasvisor::plugin::host as h;
                let level = match level {
                    crate::LogLevel::Trace => h::LogLevel::Trace,
                    crate::LogLevel::Debug => h::LogLevel::Debug,
                    crate::LogLevel::Info => h::LogLevel::Info,
                    crate::LogLevel::Warn => h::LogLevel::Warn,
                    crate::LogLevel::Error => h::LogLevel::Error,
                };
                let fields: Vec<(String, String)> =
                    fields.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                h::log(level, message, &fields);
            }
            fn monotonic_now_ns(&self) -> u64 {
                $m::nasvisor::plugin::host::monotonic_now_ns()
            }
            fn wall_clock_ms(&self) -> u64 {
                $m::nasvisor::plugin::host::wall_clock_ms()
            }
            fn setting(&self, key: &str) -> Option<String> {
                $m::nasvisor::plugin::host::setting(key)
            }
            fn settings(&self) -> Vec<(String, String)> {
                $m::nasvisor::plugin::host::settings()
            }
        }
    };
}

#[cfg(all(target_arch = "wasm32", feature = "scheduler"))]
pub mod scheduler {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "scheduler",
            pub_export_macro: true,
            export_macro_name: "__nasvisor_export_scheduler",
            default_bindings_module: "nasvisor_plugin_sdk::guest::scheduler::bindings",
        });
    }
    types_conversions!(bindings);
    use super::Conv;
    use crate::SchedulerPolicy;
    crate::__conv_record!(
        bindings::PlacementRequest,
        crate::PlacementRequest {
            vm,
            eligible_hosts,
            eligible_passive_hosts
        }
    );
    crate::__conv_record!(
        bindings::Placement,
        crate::Placement {
            host,
            passive_host,
            reason
        }
    );
    crate::__conv_record!(
        bindings::RebalanceMove,
        crate::RebalanceMove {
            vm,
            source,
            target,
            reason
        }
    );

    use bindings::nasvisor::plugin::types as w;
    pub fn place<P: SchedulerPolicy + Default>(
        view: w::ClusterView,
        req: bindings::PlacementRequest,
    ) -> Result<bindings::Placement, w::PluginError> {
        P::default()
            .place(&GuestEnv, &view.conv(), &req.conv())
            .conv()
    }
    pub fn rebalance<P: SchedulerPolicy + Default>(
        view: w::ClusterView,
    ) -> Result<Vec<bindings::RebalanceMove>, w::PluginError> {
        P::default().rebalance(&GuestEnv, &view.conv()).conv()
    }
}

#[cfg(all(target_arch = "wasm32", feature = "ha-policy"))]
pub mod ha_policy {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "ha-policy",
            pub_export_macro: true,
            export_macro_name: "__nasvisor_export_ha_policy",
            default_bindings_module: "nasvisor_plugin_sdk::guest::ha_policy::bindings",
        });
    }
    types_conversions!(bindings);
    use super::Conv;
    use crate::HaPolicy;
    use bindings::nasvisor::plugin::types as w;
    pub fn react<P: HaPolicy + Default>(
        view: w::ClusterView,
        events: Vec<w::Event>,
    ) -> Result<Vec<w::HaAction>, w::PluginError> {
        let events: Vec<crate::Event> = events.conv();
        P::default().react(&GuestEnv, &view.conv(), &events).conv()
    }
}

#[cfg(all(target_arch = "wasm32", feature = "sha"))]
pub mod sha {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "sha",
            pub_export_macro: true,
            export_macro_name: "__nasvisor_export_sha",
            default_bindings_module: "nasvisor_plugin_sdk::guest::sha::bindings",
        });
    }
    types_conversions!(bindings);
    use super::Conv;
    use crate::ShaPolicy;
    crate::__conv_record!(
        bindings::SetupProblem,
        crate::SetupProblem { code, message }
    );
    crate::__conv_record!(
        bindings::SetupCheck,
        crate::SetupCheck {
            ok,
            state,
            problems
        }
    );
    use bindings::nasvisor::plugin::types as w;
    pub fn check_setup<P: ShaPolicy + Default>(
        host: w::HostInfo,
        raw: String,
    ) -> Result<bindings::SetupCheck, w::PluginError> {
        P::default()
            .check_setup(&GuestEnv, &host.conv(), &raw)
            .conv()
    }
    pub fn parse_status<P: ShaPolicy + Default>(
        raw: String,
    ) -> Result<w::ShaPairState, w::PluginError> {
        P::default().parse_status(&GuestEnv, &raw).conv()
    }
    pub fn on_state_change<P: ShaPolicy + Default>(
        view: w::ClusterView,
        host: String,
        previous: Option<w::ShaPairState>,
        current: w::ShaPairState,
    ) -> Result<Vec<w::HaAction>, w::PluginError> {
        let previous: Option<crate::ShaPairState> = previous.conv();
        P::default()
            .on_state_change(
                &GuestEnv,
                &view.conv(),
                &host,
                previous.as_ref(),
                &current.conv(),
            )
            .conv()
    }
}

#[cfg(all(target_arch = "wasm32", feature = "os-installer"))]
pub mod os_installer {
    pub mod bindings {
        wit_bindgen::generate!({
            path: "../../wit",
            world: "os-installer",
            pub_export_macro: true,
            export_macro_name: "__nasvisor_export_os_installer",
            default_bindings_module: "nasvisor_plugin_sdk::guest::os_installer::bindings",
        });
    }
    types_conversions!(bindings);
    use super::Conv;
    use crate::types::os_installer as s;
    use crate::OsInstallerPolicy;
    use bindings as b;
    crate::__conv_cases!(
        ImageFormat,
        s::ImageFormat {
            Qcow2,
            Raw,
            Vmdk,
            Vdi,
            Iso
        }
    );
    crate::__conv_cases!(Firmware, s::Firmware { Bios, Uefi });
    use b::{Completion, DiskMethod, Firmware, ImageFormat};
    crate::__conv_record!(
        b::ImageMeta,
        s::ImageMeta {
            id,
            name,
            format,
            os_family,
            os_variant,
            cloud_init,
            firmware,
            virtual_size_bytes,
            ready_marker
        }
    );
    crate::__conv_record!(
        b::UserSpec,
        s::UserSpec {
            name,
            password_hash,
            ssh_authorized_keys,
            sudo,
            groups,
            shell
        }
    );
    crate::__conv_record!(
        b::NicSettings,
        s::NicSettings {
            mac,
            dhcp4,
            addresses,
            gateway4,
            nameservers
        }
    );
    crate::__conv_record!(
        b::InstallRequest,
        s::InstallRequest {
            vm_name,
            hostname,
            users,
            packages,
            nics,
            disk_size_gib,
            timezone
        }
    );
    crate::__conv_cases!(
        DiskMethod,
        s::DiskMethod {
            CloneBacking,
            FullConvert
        }
    );
    crate::__conv_record!(b::DiskPlan, s::DiskPlan { method, resize_gib });
    crate::__conv_record!(b::SeedFile, s::SeedFile { name, contents });
    crate::__conv_record!(
        b::BootSettings,
        s::BootSettings {
            firmware,
            kernel_args,
            attach_image_as_cdrom
        }
    );
    crate::__conv_cases!(Completion, s::Completion { SerialMarker(x), GuestAgent, PowerOff });
    crate::__conv_record!(
        b::InstallPlan,
        s::InstallPlan {
            disk,
            seed,
            boot,
            completion,
            timeout_ms
        }
    );
    use bindings::nasvisor::plugin::types as w;
    pub fn plan_install<P: OsInstallerPolicy + Default>(
        image: b::ImageMeta,
        req: b::InstallRequest,
    ) -> Result<b::InstallPlan, w::PluginError> {
        P::default()
            .plan_install(&GuestEnv, &image.conv(), &req.conv())
            .conv()
    }
}

/// Export a [`crate::SchedulerPolicy`] as the component's `scheduler` world.
/// Requires the SDK's `scheduler` feature when building for wasm32.
#[macro_export]
macro_rules! export_scheduler {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::scheduler::bindings as __b;
            struct __NasvisorGuest;
            impl __b::Guest for __NasvisorGuest {
                fn place(
                    view: __b::nasvisor::plugin::types::ClusterView,
                    request: __b::PlacementRequest,
                ) -> Result<__b::Placement, __b::nasvisor::plugin::types::PluginError> {
                    $crate::guest::scheduler::place::<$ty>(view, request)
                }
                fn rebalance(
                    view: __b::nasvisor::plugin::types::ClusterView,
                ) -> Result<Vec<__b::RebalanceMove>, __b::nasvisor::plugin::types::PluginError> {
                    $crate::guest::scheduler::rebalance::<$ty>(view)
                }
            }
            $crate::guest::scheduler::bindings::__nasvisor_export_scheduler!(__NasvisorGuest with_types_in $crate::guest::scheduler::bindings);
        };
    };
}

/// Export a [`crate::HaPolicy`] as the component's `ha-policy` world.
#[macro_export]
macro_rules! export_ha_policy {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::ha_policy::bindings as __b;
            use __b::nasvisor::plugin::types as __t;
            struct __NasvisorGuest;
            impl __b::Guest for __NasvisorGuest {
                fn react(
                    view: __t::ClusterView,
                    events: Vec<__t::Event>,
                ) -> Result<Vec<__t::HaAction>, __t::PluginError> {
                    $crate::guest::ha_policy::react::<$ty>(view, events)
                }
            }
            $crate::guest::ha_policy::bindings::__nasvisor_export_ha_policy!(__NasvisorGuest with_types_in $crate::guest::ha_policy::bindings);
        };
    };
}

/// Export a [`crate::ShaPolicy`] as the component's `sha` world.
#[macro_export]
macro_rules! export_sha {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::sha::bindings as __b;
            use __b::nasvisor::plugin::types as __t;
            struct __NasvisorGuest;
            impl __b::Guest for __NasvisorGuest {
                fn check_setup(
                    host: __t::HostInfo,
                    raw_status: String,
                ) -> Result<__b::SetupCheck, __t::PluginError> {
                    $crate::guest::sha::check_setup::<$ty>(host, raw_status)
                }
                fn parse_status(raw_status: String) -> Result<__t::ShaPairState, __t::PluginError> {
                    $crate::guest::sha::parse_status::<$ty>(raw_status)
                }
                fn on_state_change(
                    view: __t::ClusterView,
                    host: String,
                    previous: Option<__t::ShaPairState>,
                    current: __t::ShaPairState,
                ) -> Result<Vec<__t::HaAction>, __t::PluginError> {
                    $crate::guest::sha::on_state_change::<$ty>(view, host, previous, current)
                }
            }
            $crate::guest::sha::bindings::__nasvisor_export_sha!(__NasvisorGuest with_types_in $crate::guest::sha::bindings);
        };
    };
}

/// Export a [`crate::OsInstallerPolicy`] as the component's `os-installer` world.
#[macro_export]
macro_rules! export_os_installer {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::guest::os_installer::bindings as __b;
            use __b::nasvisor::plugin::types as __t;
            struct __NasvisorGuest;
            impl __b::Guest for __NasvisorGuest {
                fn plan_install(
                    image: __b::ImageMeta,
                    request: __b::InstallRequest,
                ) -> Result<__b::InstallPlan, __t::PluginError> {
                    $crate::guest::os_installer::plan_install::<$ty>(image, request)
                }
            }
            $crate::guest::os_installer::bindings::__nasvisor_export_os_installer!(__NasvisorGuest with_types_in $crate::guest::os_installer::bindings);
        };
    };
}

/// A bump allocator for components: the host gives every decision a fresh
/// instance, so a plugin's heap never outlives one call and freeing memory
/// is not worth its bookkeeping.
///
/// - Allocation rounds a pointer up and advances it: no size classes, no
///   first-use initialisation, no free lists.
/// - It starts with the free part of the module's initial linear memory
///   (from `__heap_base` to the end of the initial pages) and grows memory
///   only when that runs out. A component that fits in its initial memory
///   never calls `memory.grow`, which spares the host the page-protection
///   changes of a growing memory on every decision.
/// - `dealloc` only takes back the most recent allocation, and `realloc`
///   grows the most recent allocation in place; anything else is reclaimed
///   when the instance is dropped after the call.
/// - When the host's memory cap refuses to grow memory, allocation fails
///   as with any allocator (the call traps and the host reports the memory
///   limit).
///
/// Opt in from a plugin crate:
///
/// ```ignore
/// #[cfg(target_arch = "wasm32")]
/// #[global_allocator]
/// static ALLOC: nasvisor_plugin_sdk::guest::OneShotAlloc = nasvisor_plugin_sdk::guest::OneShotAlloc::new();
/// ```
///
/// Only for code that runs once per instance (the nasvisor plugin model):
/// memory is not reused within a call, so a policy that allocates and frees
/// a lot in a loop uses more memory than with a general-purpose allocator.
#[cfg(target_arch = "wasm32")]
#[derive(Debug)]
pub struct OneShotAlloc {
    /// Next free byte; 0 until the first allocation.
    next: core::cell::Cell<usize>,
    /// End of the linear memory the allocator may use.
    end: core::cell::Cell<usize>,
}

// SAFETY: components built by this SDK are single-threaded (wasm32 without
// the threads proposal); the cells are never accessed concurrently.
#[cfg(target_arch = "wasm32")]
unsafe impl Sync for OneShotAlloc {}

#[cfg(target_arch = "wasm32")]
impl OneShotAlloc {
    const PAGE: usize = 65536;

    pub const fn new() -> OneShotAlloc {
        OneShotAlloc {
            next: core::cell::Cell::new(0),
            end: core::cell::Cell::new(0),
        }
    }

    /// Makes `[.., new_end)` usable, growing memory if needed.
    fn ensure(&self, new_end: usize) -> bool {
        let end = self.end.get();
        if new_end <= end {
            return true;
        }
        let pages = (new_end - end).div_ceil(Self::PAGE);
        if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
            return false;
        }
        self.end.set(end + pages * Self::PAGE);
        true
    }

    fn bump(&self, layout: core::alloc::Layout) -> *mut u8 {
        let mut next = self.next.get();
        if next == 0 {
            unsafe extern "C" {
                static __heap_base: u8;
            }
            next = core::ptr::addr_of!(__heap_base) as usize;
            self.end
                .set(core::arch::wasm32::memory_size(0) * Self::PAGE);
        }
        let start = match next.checked_add(layout.align() - 1) {
            Some(n) => n & !(layout.align() - 1),
            None => return core::ptr::null_mut(),
        };
        let Some(new_next) = start.checked_add(layout.size()) else {
            return core::ptr::null_mut();
        };
        if !self.ensure(new_next) {
            return core::ptr::null_mut();
        }
        self.next.set(new_next);
        start as *mut u8
    }
}

#[cfg(target_arch = "wasm32")]
impl Default for OneShotAlloc {
    fn default() -> Self {
        OneShotAlloc::new()
    }
}

// SAFETY: every pointer returned is aligned to the layout's alignment, lies
// in linear memory the allocator owns (past `__heap_base`, below the end of
// memory), and is never handed out twice while live: `next` only moves back
// over the most recent allocation when that allocation is freed.
#[cfg(target_arch = "wasm32")]
unsafe impl core::alloc::GlobalAlloc for OneShotAlloc {
    unsafe fn alloc(&self, layout: core::alloc::Layout) -> *mut u8 {
        self.bump(layout)
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: core::alloc::Layout) {
        if ptr as usize + layout.size() == self.next.get() {
            self.next.set(ptr as usize);
        }
    }

    unsafe fn realloc(
        &self,
        ptr: *mut u8,
        layout: core::alloc::Layout,
        new_size: usize,
    ) -> *mut u8 {
        let p = ptr as usize;
        if p + layout.size() == self.next.get() {
            // The most recent allocation: grow or shrink it in place.
            let Some(new_next) = p.checked_add(new_size) else {
                return core::ptr::null_mut();
            };
            if !self.ensure(new_next) {
                return core::ptr::null_mut();
            }
            self.next.set(new_next);
            return ptr;
        }
        if new_size <= layout.size() {
            return ptr;
        }
        // SAFETY: the caller guarantees `layout.align()` with `new_size` is a
        // valid layout (GlobalAlloc::realloc's contract).
        let new_layout =
            unsafe { core::alloc::Layout::from_size_align_unchecked(new_size, layout.align()) };
        let new = self.bump(new_layout);
        if !new.is_null() {
            // SAFETY: both regions are valid for `layout.size()` bytes and
            // do not overlap (`new` lies past every live allocation).
            unsafe { core::ptr::copy_nonoverlapping(ptr, new, layout.size()) };
        }
        new
    }
}
