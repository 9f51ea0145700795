//! Typed network errors. Each names the field or object and the reason.

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A caller-supplied value breaks the rules for its field.
    #[error("{field}: {value:?} is not valid: {reason}")]
    Invalid {
        field: &'static str,
        value: String,
        reason: String,
    },
    /// The named network namespace cannot be opened or entered.
    #[error("network namespace {name:?}: {reason}")]
    Netns { name: String, reason: String },
    /// The object does not exist.
    #[error("{what} {name:?} does not exist")]
    NotFound { what: &'static str, name: String },
    /// The object already exists.
    #[error("{what} {name:?} already exists")]
    Exists { what: &'static str, name: String },
    /// A link with that name exists but is not what it should be.
    #[error("{what} {name:?} exists but {reason}")]
    Conflict {
        what: &'static str,
        name: String,
        reason: String,
    },
    /// A vswitch cannot be deleted while VM taps are attached to it.
    #[error("vswitch {name:?} still has taps attached ({}); detach them or force the deletion", taps.join(", "))]
    Busy { name: String, taps: Vec<String> },
    /// The running kernel lacks a feature the request needs.
    #[error("{what} {name:?}: the kernel does not support {feature}")]
    Unsupported {
        what: &'static str,
        name: String,
        feature: &'static str,
    },
    /// No free MAC address could be derived.
    #[error("no free MAC address for VM {vm_id:?} NIC {nic_index} after {attempts} attempts")]
    MacExhausted {
        vm_id: String,
        nic_index: u16,
        attempts: u32,
    },
    /// The kernel refused a netlink request.
    #[error("{op} {what} {name:?}: {reason}")]
    Netlink {
        op: &'static str,
        what: &'static str,
        name: String,
        /// The kernel's errno, when it gave one.
        errno: Option<i32>,
        reason: String,
    },
    /// A tun/tap ioctl or a socket operation failed.
    #[error("{op} {what} {name:?}: {source}")]
    Io {
        op: &'static str,
        what: &'static str,
        name: String,
        #[source]
        source: std::io::Error,
    },
}

impl NetError {
    pub(crate) fn invalid(
        field: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> NetError {
        NetError::Invalid {
            field,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// The kernel's errno behind this error, if there is one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetError::Netlink { errno, .. } => *errno,
            NetError::Io { source, .. } => source.raw_os_error(),
            _ => None,
        }
    }
}
