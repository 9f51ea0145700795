//! The target's side: a QEMU started with `-incoming defer` serves the
//! guest's disks over NBD (the source mirrors onto them) and listens for
//! the memory stream. [`crate::VmInstance::wait_incoming_loaded`] then
//! waits for the memory to have arrived.

use std::path::Path;

use super::MigrateError;
use crate::qmp::{
    InetAddr, MigrationCapability, MigrationParameters, NbdExport, ObjectAdd, QmpClient,
    TlsEndpoint, TlsServer,
};

/// Adds TLS server credentials read from `dir` as object `id` and an
/// `authz-simple` object `authz_id` admitting only `identity` (the
/// distinguished name of the one client certificate expected).
pub async fn tls_server(
    qmp: &QmpClient,
    id: &str,
    dir: &Path,
    authz_id: &str,
    identity: &str,
) -> Result<TlsServer, MigrateError> {
    qmp.object_add(
        &ObjectAdd::TlsCredsX509 {
            id: id.to_string(),
            dir: dir.to_string_lossy().into_owned(),
            endpoint: TlsEndpoint::Server,
            verify_peer: true,
        },
        true,
    )
    .await
    .map_err(MigrateError::qmp("TLS credentials"))?;
    qmp.object_add(
        &ObjectAdd::AuthzSimple {
            id: authz_id.to_string(),
            identity: identity.to_string(),
        },
        false,
    )
    .await
    .map_err(MigrateError::qmp("TLS authorization"))?;
    Ok(TlsServer {
        creds: id.to_string(),
        authz: authz_id.to_string(),
    })
}

/// Starts QEMU's NBD server on `addr` and exports each node of `nodes`
/// writable, under its own name.
pub async fn serve_disks(
    qmp: &QmpClient,
    addr: &InetAddr,
    nodes: &[String],
    tls: Option<&TlsServer>,
) -> Result<(), MigrateError> {
    qmp.nbd_server_start(addr, tls)
        .await
        .map_err(MigrateError::qmp(format!("nbd-server-start on {addr}")))?;
    for node in nodes {
        qmp.block_export_add(&NbdExport {
            id: format!("{}{node}", super::MIRROR_PREFIX),
            node_name: node.clone(),
            name: node.clone(),
            writable: true,
        })
        .await
        .map_err(MigrateError::qmp(format!("exporting {node}")))?;
    }
    Ok(())
}

/// Turns on `MIGRATION` events, sets the stream's TLS (plain when `None`)
/// and listens on `uri` for the memory stream.
pub async fn listen_incoming(
    qmp: &QmpClient,
    uri: &str,
    tls: Option<&TlsServer>,
) -> Result<(), MigrateError> {
    qmp.migrate_set_capabilities(&[(MigrationCapability::Events, true)])
        .await
        .map_err(MigrateError::qmp("migrate-set-capabilities"))?;
    // An empty credentials id turns TLS off (QEMU's convention).
    qmp.migrate_set_parameters(&MigrationParameters {
        tls_creds: Some(tls.map(|t| t.creds.clone()).unwrap_or_default()),
        tls_authz: Some(tls.map(|t| t.authz.clone()).unwrap_or_default()),
        ..Default::default()
    })
    .await
    .map_err(MigrateError::qmp("migrate-set-parameters"))?;
    qmp.migrate_incoming(uri)
        .await
        .map_err(MigrateError::qmp("migrate-incoming"))
}
