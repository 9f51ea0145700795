//! The core on the peer channel: [`Inner::call_peer`] asks another host one
//! typed call of [`nasvisor_api_types::peer`], [`Inner::peer_handler`]
//! serves the others' calls. The version of a request is checked before
//! its call is read; a version outside this host's window is answered with
//! [`CoreError::UnsupportedVersion`] naming this host and both versions.

use crate::errors;
use crate::model::{HostRecord, VmRecord};
use crate::Inner;
use nasvisor_api_types::peer::{
    self, ActionReply, BundleExport, Call, Console, ConsoleReply, ForwardAction, Heartbeat,
    HeartbeatReply, ImageExport, ImageExportEnd, JobProgress, MigrateAbort, MigrateFinish,
    MigratePrepare, PeerCall, PeerRefusal, PeerWindow, Read, ReplicaDrop, ReplicaServe,
    ReplicaVars, RolloutFetch, RolloutInstall,
};
use nasvisor_api_types::CoreError;
use nasvisor_cluster::{CallError, PeerHandler, PeerRequest, StoreError};
use serde_json::Value;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The calls as this core sends and serves them (with its VM record).
pub(crate) type CorePeerCall = PeerCall<VmRecord>;

impl Inner {
    /// The peer protocol versions this host serves (this build's window;
    /// tests may set another through [`crate::CoreConfig`]).
    pub(crate) fn peer_window(&self) -> PeerWindow {
        self.cfg.peer_window()
    }

    /// Asks host `rec` call `call` over the cluster channel, written in the
    /// highest version both serve, and reads its typed answer.
    pub(crate) async fn call_peer<C: Call<VmRecord>>(
        &self,
        rec: &HostRecord,
        call: C,
        timeout: Duration,
    ) -> Result<C::Reply, CoreError> {
        let version = self.peer_window().stamp_for(rec.protocol);
        let body = peer::envelope::<VmRecord, C>(version, call).map_err(|e| {
            errors::internal(format!("peer call {} cannot be written: {e}", C::NAME))
        })?;
        let reply = self
            .db
            .store()
            .call_peer(rec.node_id, C::NAME, body, timeout)
            .await
            .map_err(|e| transport_error(rec, C::NAME, e))?;
        match reply {
            Ok(v) => peer::decode_reply::<VmRecord, C>(v)
                .map_err(|e| errors::internal(format!("host {}: {e}", rec.id))),
            Err(v) => Err(
                serde_json::from_value::<CoreError>(v.clone()).unwrap_or_else(|e| {
                    errors::internal(format!(
                    "host {} refused peer call {} with an error that does not decode ({e}): {v}",
                    rec.id,
                    C::NAME
                ))
                }),
            ),
        }
    }

    /// Serves the other hosts' requests; holds the core weakly.
    pub(crate) fn peer_handler(self: &Arc<Self>) -> PeerHandler {
        let weak: Weak<Inner> = Arc::downgrade(self);
        Arc::new(move |from, req: PeerRequest| {
            let weak = weak.clone();
            Box::pin(async move {
                let Some(me) = weak.upgrade() else {
                    return Err(encode(&CoreError::Unavailable {
                        reason: "nasvisord is stopping".into(),
                    }));
                };
                me.on_peer(from, req).await.map_err(|e| encode(&e))
            })
        })
    }

    /// One request: its version first, then the call.
    async fn on_peer(self: &Arc<Self>, from: u64, req: PeerRequest) -> Result<Value, CoreError> {
        let call: CorePeerCall =
            peer::decode_request(self.peer_window(), req.body).map_err(|r| match r {
                PeerRefusal::UnsupportedVersion {
                    ours,
                    oldest,
                    theirs,
                } => {
                    tracing::warn!(from, method = %req.method, ours, oldest, theirs, "a peer request in a protocol version this host does not serve");
                    CoreError::UnsupportedVersion {
                        host: self.host.id.clone(),
                        ours,
                        oldest,
                        theirs,
                    }
                }
                PeerRefusal::Malformed { call, reason } => {
                    errors::invalid(format!("peer call {call}"), reason)
                }
            })?;
        tracing::debug!(from, call = call.name(), "peer call");
        match call {
            PeerCall::Heartbeat(h) => {
                // Only the leader's loop sends heartbeats.
                self.renew_ha_lease_from(&h);
                let mut answer = self.heartbeat();
                answer.seq = self.cluster.lease.answer_seq();
                reply::<Heartbeat>(answer)
            }
            PeerCall::Action(c) => {
                tracing::debug!(from, action = ?c.action, "action forwarded by another host");
                self.db.applied(c.after).await;
                let result = self.handle_here(c.action).await?;
                let revision = self.db.store().revision();
                reply::<ForwardAction>(ActionReply { result, revision })
            }
            PeerCall::Read(c) => {
                if !crate::cluster::is_read_only(&c.action) {
                    return Err(errors::invalid("action", "only reads go by `read`"));
                }
                self.db.applied(c.after).await;
                let answer = self.handle_here(c.action).await?;
                reply::<Read>(answer)
            }
            PeerCall::Console(c) => {
                let bytes = self.console_tail(&c.id, c.tail).await?;
                use base64::Engine as _;
                let data = base64::engine::general_purpose::STANDARD.encode(bytes);
                reply::<Console>(ConsoleReply { data })
            }
            PeerCall::MigratePrepare(p) => {
                let prepared = self.prepare_incoming(from, p).await?;
                reply::<MigratePrepare<VmRecord>>(prepared)
            }
            PeerCall::MigrateFinish(c) => {
                self.finish_incoming(&c.id).await?;
                reply::<MigrateFinish>(())
            }
            PeerCall::MigrateAbort(c) => {
                self.abort_incoming(&c.id).await;
                reply::<MigrateAbort>(())
            }
            PeerCall::ImageExport(c) => {
                let r = self.export_image(from, &c.name).await?;
                reply::<ImageExport>(r)
            }
            PeerCall::ImageExportEnd(c) => {
                self.end_image_export(&c.id).await;
                reply::<ImageExportEnd>(())
            }
            PeerCall::JobProgress(c) => reply::<JobProgress>(self.local_jobs.live(&c.ids)),
            PeerCall::ReplicaServe(c) => {
                let serving = self.replica_serve(from, c).await?;
                reply::<ReplicaServe>(serving)
            }
            PeerCall::ReplicaDrop(c) => {
                self.replica_drop(c).await?;
                reply::<ReplicaDrop>(())
            }
            PeerCall::ReplicaVars(c) => {
                self.keep_replica_vars(c)?;
                reply::<ReplicaVars>(())
            }
            PeerCall::BundleExport(c) => {
                let r = self.export_bundle(from, &c).await?;
                reply::<BundleExport>(r)
            }
            PeerCall::RolloutFetch(c) => {
                let r = self.rollout_fetch(c).await?;
                reply::<RolloutFetch>(r)
            }
            PeerCall::RolloutInstall(c) => {
                let r = self.rollout_install_here(c).await?;
                reply::<RolloutInstall>(r)
            }
        }
    }

    /// This host's answer to the leader's heartbeat.
    pub(crate) fn heartbeat(&self) -> HeartbeatReply {
        let (storage, free) = self.local_storage_gib();
        let problems = self.health.problems();
        HeartbeatReply {
            host: self.host.id.clone(),
            version: self.host.version.clone(),
            protocol: self.peer_window().current,
            healthy: problems.is_empty(),
            problems,
            running_vms: self.processes.len() as u32,
            storage_gib: storage,
            free_storage_gib: free,
            seq: 0,
        }
    }
}

/// What a failed peer call means for the caller: whether anything was
/// carried out, and whether trying again can help.
fn transport_error(rec: &HostRecord, call: &str, e: StoreError) -> CoreError {
    let host = &rec.id;
    match e {
        StoreError::Transport(e @ CallError::Connect { .. }) => CoreError::Unavailable {
            reason: format!("host {host} cannot be reached ({e}); nothing was sent"),
        },
        StoreError::Transport(e @ (CallError::Timeout { .. } | CallError::Io { .. })) => {
            CoreError::Unavailable {
                reason: format!(
                    "host {host} did not complete {call} ({e}); the outcome is unknown: \
                     check the object's state before trying again"
                ),
            }
        }
        StoreError::Transport(CallError::Refused { reason, .. }) => CoreError::Conflict {
            reason: format!(
                "host {host} refused {call} from this host ({reason}); it does not count this \
                 host as a member of its cluster"
            ),
        },
        StoreError::Transport(e @ CallError::BadAnswer { .. }) => CoreError::Internal {
            reason: format!("host {host} answered {call} with something unreadable: {e}"),
        },
        StoreError::Invalid {
            field: "node_id", ..
        } => CoreError::Conflict {
            reason: format!(
                "host {host} (node {}) is no longer a member of the cluster",
                rec.node_id
            ),
        },
        e @ StoreError::NotClustered => CoreError::Conflict {
            reason: e.to_string(),
        },
        e => CoreError::Unavailable {
            reason: format!("host {host} cannot be reached: {e}"),
        },
    }
}

/// The answer to call `C`, for the wire.
fn reply<C: Call<VmRecord>>(r: C::Reply) -> Result<Value, CoreError> {
    peer::encode_reply::<VmRecord, C>(&r).map_err(|e| {
        errors::internal(format!(
            "the answer to peer call {} cannot be written: {e}",
            C::NAME
        ))
    })
}

/// An error as it travels back to the caller.
fn encode(e: &CoreError) -> Value {
    serde_json::to_value(e).unwrap_or_else(|err| {
        // A `CoreError` is plain strings and numbers; this cannot fail, but
        // the caller still gets words rather than nothing.
        Value::String(format!("{e} (not encodable: {err})"))
    })
}

#[cfg(test)]
pub(crate) mod tests;
