//! Turning the errors of the layers below into the core's [`CoreError`],
//! which the API maps to status codes.

use nasvisor_api_types::CoreError;
use nasvisor_cluster::StoreError;
use nasvisor_net::NetError;
use nasvisor_storage::StorageError;

pub fn not_found(what: impl Into<String>) -> CoreError {
    CoreError::NotFound { what: what.into() }
}

pub fn conflict(reason: impl Into<String>) -> CoreError {
    CoreError::Conflict {
        reason: reason.into(),
    }
}

pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> CoreError {
    CoreError::Invalid {
        field: field.into(),
        reason: reason.into(),
    }
}

pub fn internal(reason: impl std::fmt::Display) -> CoreError {
    CoreError::Internal {
        reason: reason.to_string(),
    }
}

/// A storage error; `field` names the request field it is about.
pub fn storage(field: &str, e: StorageError) -> CoreError {
    match e {
        StorageError::BadName { .. } | StorageError::BadSize { .. } => {
            invalid(field, e.to_string())
        }
        StorageError::Exists { .. } | StorageError::NoSpace { .. } => conflict(e.to_string()),
        StorageError::NotFound { what, name } => not_found(format!("{what} {name}")),
        StorageError::BadImage { .. }
        | StorageError::BadPoolDir { .. }
        | StorageError::Limit { .. } => invalid(field, e.to_string()),
        StorageError::Download { field, ref reason } => invalid(field, reason.clone()),
        StorageError::Cancelled { .. } | StorageError::Busy { .. } => conflict(e.to_string()),
        StorageError::QemuImg { .. } | StorageError::Io { .. } => internal(e),
    }
}

/// A network error; `field` names the request field it is about.
pub fn net(field: &str, e: NetError) -> CoreError {
    match &e {
        NetError::Invalid { .. } => invalid(field, e.to_string()),
        _ => internal(e),
    }
}

/// A cluster-store error.
pub fn store(e: StoreError) -> CoreError {
    match e {
        StoreError::Conflict { .. } => {
            conflict(format!("the object changed concurrently, try again ({e})"))
        }
        StoreError::NotFound { kind, key } => not_found(format!("{kind} {key}")),
        StoreError::NotLeader { .. } => CoreError::Unavailable {
            reason: e.to_string(),
        },
        StoreError::NotClustered => conflict(
            "this host is not part of a cluster; create one first (nasvisor cluster create)",
        ),
        StoreError::AlreadyClustered { .. } => conflict(e.to_string()),
        StoreError::Invalid { field, ref reason } => invalid(field, reason.clone()),
        StoreError::Bind { .. }
        | StoreError::Timeout(_)
        | StoreError::Unconfirmed(_)
        | StoreError::Deposed { .. } => {
            CoreError::Unavailable {
                reason: e.to_string(),
            }
        }
        // A forwarded change whose call did not complete may have been
        // carried out by the leader.
        StoreError::Transport(
            ref c @ (nasvisor_cluster::CallError::Timeout { .. }
            | nasvisor_cluster::CallError::Io { .. }),
        ) => CoreError::Unavailable {
            reason: format!("{c}; the change may still be applied, so its outcome is unknown: check the object before trying again"),
        },
        StoreError::JoinRefused(_) => conflict(e.to_string()),
        StoreError::NotEmpty { .. } => conflict(e.to_string()),
        StoreError::Transport(_) | StoreError::Remote { .. } => CoreError::Unavailable {
            reason: e.to_string(),
        },
        e => internal(e),
    }
}
