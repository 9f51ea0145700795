//! Typed QMP for live migration (`migrate-set-capabilities`,
//! `migrate-set-parameters`, `migrate`, `migrate-incoming`, `query-migrate`)
//! and for the TLS objects its streams use (`object-add`).

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use super::{QmpClient, QmpError};

/// QEMU's `MigrationStatus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationStatus {
    None,
    Setup,
    Cancelling,
    Cancelled,
    Active,
    PostcopyDevice,
    PostcopyActive,
    PostcopyPaused,
    PostcopyRecoverSetup,
    PostcopyRecover,
    Completed,
    Failed,
    Colo,
    PreSwitchover,
    Device,
    WaitUnplug,
    /// A status this library does not know.
    #[serde(other)]
    Unknown,
}

impl MigrationStatus {
    /// The migration is over, however it ended.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            MigrationStatus::Completed | MigrationStatus::Failed | MigrationStatus::Cancelled
        )
    }

    /// A migration is under way (neither never started nor over).
    pub fn is_in_progress(self) -> bool {
        !self.is_final() && self != MigrationStatus::None
    }

    /// QEMU's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            MigrationStatus::None => "none",
            MigrationStatus::Setup => "setup",
            MigrationStatus::Cancelling => "cancelling",
            MigrationStatus::Cancelled => "cancelled",
            MigrationStatus::Active => "active",
            MigrationStatus::PostcopyDevice => "postcopy-device",
            MigrationStatus::PostcopyActive => "postcopy-active",
            MigrationStatus::PostcopyPaused => "postcopy-paused",
            MigrationStatus::PostcopyRecoverSetup => "postcopy-recover-setup",
            MigrationStatus::PostcopyRecover => "postcopy-recover",
            MigrationStatus::Completed => "completed",
            MigrationStatus::Failed => "failed",
            MigrationStatus::Colo => "colo",
            MigrationStatus::PreSwitchover => "pre-switchover",
            MigrationStatus::Device => "device",
            MigrationStatus::WaitUnplug => "wait-unplug",
            MigrationStatus::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for MigrationStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Reply of `query-migrate`. Every field is optional: QEMU omits them before a
/// migration starts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationInfo {
    #[serde(default)]
    pub status: Option<MigrationStatus>,
    /// Milliseconds since the migration started.
    #[serde(default)]
    pub total_time: Option<u64>,
    /// Milliseconds the guest was stopped (after completion).
    #[serde(default)]
    pub downtime: Option<u64>,
    #[serde(default)]
    pub expected_downtime: Option<u64>,
    #[serde(default)]
    pub setup_time: Option<u64>,
    #[serde(default)]
    pub ram: Option<MigrationRamStats>,
    #[serde(default)]
    pub error_desc: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// RAM statistics of a migration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationRamStats {
    #[serde(default)]
    pub transferred: u64,
    #[serde(default)]
    pub remaining: u64,
    #[serde(default)]
    pub total: u64,
    #[serde(default)]
    pub mbps: f64,
    /// Passes over the dirty bitmap so far (1 after the first full copy).
    #[serde(default)]
    pub dirty_sync_count: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The migration capabilities nasvisor sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationCapability {
    /// `MIGRATION` and `MIGRATION_PASS` events.
    Events,
    Xbzrle,
    /// The target answers on the stream (needed by some later features).
    ReturnPath,
    /// Stop in `pre-switchover` until `migrate-continue`.
    PauseBeforeSwitchover,
}

/// `migrate-set-parameters`; `None` leaves a parameter as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct MigrationParameters {
    /// The longest pause of the guest QEMU aims for, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub downtime_limit: Option<u64>,
    /// Bandwidth cap of the stream, bytes/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_bandwidth: Option<u64>,
    /// Credentials object of the stream; `Some("")` turns TLS off.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_creds: Option<String>,
    /// The name the target's certificate must carry (source side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_hostname: Option<String>,
    /// The `authz` object admitting the source's certificate (target side).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls_authz: Option<String>,
}

/// `endpoint` of TLS credentials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum TlsEndpoint {
    Client,
    Server,
}

/// The QOM objects nasvisor adds at run time (`object-add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "qom-type", rename_all = "kebab-case")]
pub enum ObjectAdd {
    /// X.509 credentials read from `dir` (GnuTLS file names).
    #[serde(rename_all = "kebab-case")]
    TlsCredsX509 {
        id: String,
        dir: String,
        endpoint: TlsEndpoint,
        verify_peer: bool,
    },
    /// Admits exactly one identity (a certificate's distinguished name).
    AuthzSimple { id: String, identity: String },
}

impl QmpClient {
    /// `query-migrate`: the status of the current or last outgoing migration
    /// (on a target: of the incoming one).
    pub async fn query_migrate(&self) -> Result<MigrationInfo, QmpError> {
        self.execute_as("query-migrate", None).await
    }

    /// `migrate`: start an outgoing migration to `uri` (e.g. `tcp:10.0.0.2:4444`).
    /// Progress arrives through [`Self::query_migrate`], and as `MIGRATION`
    /// events once [`MigrationCapability::Events`] is on.
    pub async fn migrate(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate-incoming`: on a QEMU started with `-incoming defer`, listen on `uri`.
    pub async fn migrate_incoming(&self, uri: &str) -> Result<(), QmpError> {
        self.execute("migrate-incoming", Some(json!({ "uri": uri })))
            .await
            .map(drop)
    }

    /// `migrate_cancel`: cancel the outgoing migration.
    pub async fn migrate_cancel(&self) -> Result<(), QmpError> {
        self.execute("migrate_cancel", None).await.map(drop)
    }

    /// `migrate-set-capabilities` with `(capability, state)` pairs.
    pub async fn migrate_set_capabilities(
        &self,
        capabilities: &[(MigrationCapability, bool)],
    ) -> Result<(), QmpError> {
        let caps: Vec<Value> = capabilities
            .iter()
            .map(|(name, state)| json!({ "capability": name, "state": state }))
            .collect();
        self.execute(
            "migrate-set-capabilities",
            Some(json!({ "capabilities": caps })),
        )
        .await
        .map(drop)
    }

    /// `migrate-set-parameters`.
    pub async fn migrate_set_parameters(
        &self,
        parameters: &MigrationParameters,
    ) -> Result<(), QmpError> {
        let args = self.to_args("migrate-set-parameters", parameters)?;
        self.execute("migrate-set-parameters", Some(args))
            .await
            .map(drop)
    }

    /// `object-add`. An object with that id already there counts as added
    /// when `existing_ok` (credentials are added once per QEMU).
    pub async fn object_add(&self, object: &ObjectAdd, existing_ok: bool) -> Result<(), QmpError> {
        let args = self.to_args("object-add", object)?;
        match self.execute("object-add", Some(args)).await {
            Ok(_) => Ok(()),
            Err(QmpError::Command { desc, .. })
                if existing_ok && (desc.contains("already") || desc.contains("duplicate")) =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_info_tolerates_missing_fields() {
        let m: MigrationInfo = serde_json::from_value(json!({})).unwrap();
        assert!(m.status.is_none());
        let m: MigrationInfo = serde_json::from_value(json!({"status": "completed",
            "downtime": 5, "ram": {"transferred": 10, "remaining": 0, "total": 10, "mbps": 1.5,
            "dirty-pages-rate": 0}}))
        .unwrap();
        assert_eq!(m.status, Some(MigrationStatus::Completed));
        assert_eq!(m.downtime, Some(5));
        assert_eq!(m.ram.unwrap().transferred, 10);
        let m: MigrationInfo = serde_json::from_value(json!({"status": "brand-new"})).unwrap();
        assert_eq!(m.status, Some(MigrationStatus::Unknown));
    }

    #[test]
    fn parameters_render_only_what_is_set() {
        let p = MigrationParameters {
            downtime_limit: Some(25),
            tls_creds: Some(String::new()),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"downtime-limit": 25, "tls-creds": ""})
        );
    }

    #[test]
    fn tls_objects_render_as_qemu_expects() {
        let o = ObjectAdd::TlsCredsX509 {
            id: "t".into(),
            dir: "/d".into(),
            endpoint: TlsEndpoint::Client,
            verify_peer: true,
        };
        assert_eq!(
            serde_json::to_value(&o).unwrap(),
            json!({"qom-type": "tls-creds-x509", "id": "t", "dir": "/d",
                "endpoint": "client", "verify-peer": true})
        );
        let a = ObjectAdd::AuthzSimple {
            id: "a".into(),
            identity: "CN=x,O=y".into(),
        };
        assert_eq!(
            serde_json::to_value(&a).unwrap(),
            json!({"qom-type": "authz-simple", "id": "a", "identity": "CN=x,O=y"})
        );
    }

    #[test]
    fn statuses_tell_final_from_in_progress() {
        assert!(MigrationStatus::Completed.is_final());
        assert!(MigrationStatus::Active.is_in_progress());
        assert!(!MigrationStatus::None.is_in_progress());
        assert!(!MigrationStatus::Cancelled.is_in_progress());
    }
}
