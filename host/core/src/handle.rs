//! [`nasvisor_api_types::Core`] for [`NasCore`]: one match from action to the
//! module that carries it out. Each module answers with a typed view
//! (`nasvisor_api_types::view`), returned as an [`Answer`]; the server turns
//! it into the JSON it sends.

use crate::errors;
use crate::model::{kind, VmRecord, VswitchRecord};
use crate::{Inner, NasCore};
use bytes::Bytes;
use futures_util::StreamExt;
use nasvisor_api_types::{
    Action, ClusterView, CoreError, HostView, JoinTokenView, MemberStatus, MemberView,
};
use nasvisor_api_types::{Answer, ByteStream, ImageUpload, IntoAnswer};
use nasvisor_api_types::{AuditEntry, Caller, Credential, Login, Request, SessionView};
use nasvisor_best_effort::BestEffort;
use nasvisor_storage::SnapshotOp;
use std::net::IpAddr;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;

fn tail(mut bytes: Vec<u8>, n: u64) -> Vec<u8> {
    let n = n as usize;
    if bytes.len() > n {
        bytes.drain(..bytes.len() - n);
    }
    bytes
}

impl Inner {
    fn this_host_view(&self) -> HostView {
        let rec = self
            .db
            .get::<crate::model::HostRecord>(kind::HOST, &self.host.id)
            .map(|(h, _)| h)
            .unwrap_or_else(|| self.host.clone());
        self.host_view(&rec)
    }

    async fn console_input(&self, id: &str, data: &str) -> Result<(), CoreError> {
        let vm = self.find_vm(id)?;
        let console = self
            .processes
            .instance(&vm.id)
            .and_then(|i| i.console().cloned())
            .ok_or_else(|| errors::conflict(format!("VM {} is not running", vm.name)))?;
        console
            .write(data.as_bytes())
            .await
            .map_err(|e| errors::conflict(format!("VM {}'s console: {e}", vm.name)))?;
        Ok(())
    }

    /// The last `n` bytes of a VM's console on this host.
    pub(crate) async fn console_tail(&self, id: &str, n: u64) -> Result<Vec<u8>, CoreError> {
        let vm = self.find_vm(id)?;
        let console = self
            .processes
            .instance(&vm.id)
            .and_then(|i| i.console().cloned());
        let log = match console {
            Some(c) => c.read_log().await.map_err(errors::internal)?,
            None => {
                let paths = nasvisor_vm::RunPaths::new(self.cfg.run_dir(), &vm.id)
                    .map_err(errors::internal)?;
                nasvisor_vm::console::read_console_log(&paths.console_log())
                    .await
                    .unwrap_or_default()
            }
        };
        Ok(tail(log, n))
    }

    async fn console_stream(
        &self,
        id: &str,
        follow: bool,
        n: u64,
    ) -> Result<ByteStream, CoreError> {
        let vm = self.find_vm(id)?;
        let console = self
            .processes
            .instance(&vm.id)
            .and_then(|i| i.console().cloned());
        let Some(console) = console else {
            // Not running: the log of the last run.
            let paths =
                nasvisor_vm::RunPaths::new(self.cfg.run_dir(), &vm.id).map_err(errors::internal)?;
            let log = nasvisor_vm::console::read_console_log(&paths.console_log())
                .await
                .unwrap_or_default();
            let once = futures_util::stream::once(async move { Ok(Bytes::from(tail(log, n))) });
            return Ok(Box::pin(once));
        };
        if !follow {
            let log = console.read_log().await.map_err(errors::internal)?;
            let once = futures_util::stream::once(async move { Ok(Bytes::from(tail(log, n))) });
            return Ok(Box::pin(once));
        }
        let (history, rx) = console
            .subscribe_with_history()
            .await
            .map_err(errors::internal)?;
        let first = futures_util::stream::once(async move { Ok(Bytes::from(tail(history, n))) });
        let live = futures_util::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(chunk) => Some((Ok(Bytes::copy_from_slice(&chunk)), rx)),
                Err(RecvError::Lagged(k)) => {
                    let note = format!(
                        "\r\n[nasvisor: {k} console chunks skipped: the client was too slow]\r\n"
                    );
                    Some((Ok(Bytes::from(note)), rx))
                }
                Err(RecvError::Closed) => None,
            }
        });
        Ok(Box::pin(first.chain(live)))
    }

    pub(crate) fn cluster_answer(&self) -> ClusterView {
        let store = self.db.store();
        let info = store.cluster_info();
        ClusterView {
            clustered: info.is_some(),
            cluster_id: info.as_ref().map(|i| i.cluster_id.clone()),
            ca_fingerprint: info.as_ref().map(|i| i.ca_fingerprint.clone()),
            max_members: info.as_ref().map(|i| i.max_members).unwrap_or(1),
            this_node: store.node_id(),
            address: self.cfg.cluster_address.clone(),
            leader: store.metrics().current_leader,
            members: store
                .members()
                .iter()
                .map(|m| MemberView {
                    node_id: m.node_id,
                    addr: m.addr.clone(),
                    status: match m.status {
                        nasvisor_cluster::NodeStatus::Joining => MemberStatus::Joining,
                        nasvisor_cluster::NodeStatus::Member => MemberStatus::Member,
                        nasvisor_cluster::NodeStatus::Removed => MemberStatus::Removed,
                    },
                    voter: m.voter,
                    key: m.key.clone(),
                })
                .collect(),
        }
    }

    async fn create_cluster(&self, max_members: Option<u32>) -> Result<ClusterView, CoreError> {
        let _g = self.ops.lock().await;
        let listen = crate::parse_listen(&self.cfg.cluster_address)?;
        let settings = nasvisor_cluster::ClusterSettings {
            max_members: max_members.unwrap_or(7),
        };
        let info = self
            .db
            .store()
            .create_cluster(settings)
            .await
            .map_err(errors::store)?;
        let addr = self.db.store().serve(listen).await.map_err(errors::store)?;
        self.event(
            "cluster-created",
            crate::model::Severity::Info,
            None,
            format!(
                "cluster {} created; CA {}; cluster endpoint on {addr}",
                info.cluster_id, info.ca_fingerprint
            ),
        )
        .await;
        Ok(self.cluster_answer())
    }

    async fn issue_join_token(&self, ttl_s: u32) -> Result<JoinTokenView, CoreError> {
        let ttl = std::time::Duration::from_secs(ttl_s.into());
        let token = self
            .db
            .store()
            .issue_join_token(ttl)
            .await
            .map_err(errors::store)?;
        let expires = time::OffsetDateTime::now_utc() + ttl;
        let expires_at = expires
            .format(&time::format_description::well_known::Rfc3339)
            .map_err(errors::internal)?;
        Ok(JoinTokenView { token, expires_at })
    }

    async fn remove_member(&self, node_id: u64) -> Result<(), CoreError> {
        if !self
            .db
            .store()
            .members()
            .iter()
            .any(|m| m.node_id == node_id)
        {
            return Err(errors::not_found(format!("cluster member {node_id}")));
        }
        self.db
            .store()
            .remove_member(node_id)
            .await
            .map_err(|e| match e {
                nasvisor_cluster::StoreError::Invalid { reason, .. } => {
                    errors::invalid("node", reason)
                }
                e => errors::store(e),
            })?;
        let host = self
            .db
            .list::<crate::model::HostRecord>(kind::HOST)
            .into_iter()
            .find(|h| h.node_id == node_id);
        let name = host
            .as_ref()
            .map_or(format!("node {node_id}"), |h| h.id.clone());
        self.event(
            "cluster-member-removed",
            crate::model::Severity::Warning,
            Some(format!("host/{name}")),
            format!("host {name} (node {node_id}) removed from the cluster"),
        )
        .await;
        if let Some(h) = host {
            self.record_lost(&h.id, true, None, None).await;
        }
        Ok(())
    }

    /// After a (re)start: clean pools, recreate bridges, adopt running VMs,
    /// then end interrupted jobs.
    pub(crate) async fn recover(self: &Arc<Self>) -> Result<(), CoreError> {
        for p in self.local_pools() {
            if let Ok(pool) = nasvisor_storage::Pool::open(&p.name, std::path::Path::new(&p.path)) {
                if let Ok(n) = pool.clean_temporaries() {
                    if n > 0 {
                        tracing::info!(pool = %p.name, files = n, "removed temporary files of an interrupted operation");
                    }
                }
            }
        }
        for s in self.db.list::<VswitchRecord>(kind::VSWITCH) {
            if let Err(e) = self.ensure_vswitch(&s) {
                tracing::error!(vswitch = %s.name, error = %e, "cannot restore a vswitch");
            }
        }
        // Moves that were arriving first: a finished one leaves a VM that
        // recover_vms then adopts; an unfinished one leaves nothing.
        self.recover_incoming().await;
        self.recover_vms().await;
        self.stop_stale_copies().await;
        self.recover_jobs().await;
        // Installs found half-done by recover_jobs were marked failed; VMs
        // still recorded `installing` without a job are stale too.
        for vm in self.db.list::<VmRecord>(kind::VM) {
            if vm.state == crate::model::VmStatus::Installing
                && vm.install_job.is_none()
                && vm.host.as_deref().is_none_or(|h| h == self.host.id)
            {
                self.db
                    .update::<VmRecord, _>(kind::VM, &vm.id, |v| {
                        v.state = crate::model::VmStatus::InstallFailed;
                        v.state_reason = Some("install interrupted before it started".into());
                        Ok(())
                    })
                    .await
                    .best_effort("record an install interrupted before it started");
            }
        }
        Ok(())
    }
}

/// A typed answer as an [`Answer`] (`()` is an answer without content).
fn answer<T: IntoAnswer>(r: Result<T, CoreError>) -> Result<Answer, CoreError> {
    r.map(IntoAnswer::into_answer)
}

impl Inner {
    /// Carries `action` out on this host (routing already done).
    pub(crate) async fn handle_here(self: &Arc<Self>, action: Action) -> Result<Answer, CoreError> {
        let c = self;
        match action {
            Action::GetHost => answer(Ok(c.this_host_view())),
            Action::GetFirmware => answer(c.firmware_status().await),
            Action::GetHostSettings => answer(c.host_settings().await),
            Action::ReplaceHostSettings { text, restart } => {
                answer(c.replace_host_settings(text, restart).await)
            }
            Action::ClearHostSettings { restart } => answer(c.clear_host_settings(restart).await),
            Action::RebootHost {
                force,
                shutdown_timeout_s,
            } => answer(c.reboot_host(force, shutdown_timeout_s).await),
            Action::GetClusterUpdate => answer(c.rollout_view()),
            Action::ResumeClusterUpdate => answer(c.resume_rollout().await),
            Action::AbortClusterUpdate => answer(c.abort_rollout().await),
            Action::ListVms => answer(Ok(c.list_vms())),
            Action::GetVm { id } => answer(c.find_vm(&id).map(|v| c.vm_view(&v))),
            Action::CreateVm(req) => answer(c.create_vm(req).await),
            Action::UpdateVm { id, update } => answer(c.update_vm(&id, update).await),
            Action::DeleteVm {
                id,
                delete_disks,
                force: false,
            } => answer(c.delete_vm(&id, delete_disks).await),
            Action::DeleteVm {
                id,
                delete_disks,
                force: true,
            } => answer(c.force_delete_vm(&id, delete_disks).await),
            Action::RecoverVm { id, recover } => answer(c.recover_vm(&id, recover).await),
            Action::VmPower { id, op } => answer(c.power(&id, op).await),
            Action::ConsoleInput { id, data } => answer(c.console_input(&id, &data).await),
            Action::ListPools => answer(c.list_pools()),
            Action::CreatePool(req) => answer(c.create_pool(req).await),
            Action::DeletePool { name } => answer(c.delete_pool(&name).await),
            Action::ListVolumes { pool } => answer(c.list_volumes(&pool).await),
            Action::CreateVolume { pool, volume } => answer(c.create_volume(&pool, volume).await),
            Action::DeleteVolume { pool, volume } => answer(c.delete_volume(&pool, &volume).await),
            Action::ResizeVolume {
                pool,
                volume,
                size_mib,
            } => answer(c.resize_volume(&pool, &volume, size_mib).await),
            Action::SnapshotVolume { pool, volume, name } => answer(
                c.snapshot_op(&pool, &volume, &name, SnapshotOp::Create)
                    .await,
            ),
            Action::ListSnapshots { pool, volume } => {
                answer(c.list_snapshots(&pool, &volume).await)
            }
            Action::RevertSnapshot { pool, volume, name } => answer(
                c.snapshot_op(&pool, &volume, &name, SnapshotOp::Apply)
                    .await,
            ),
            Action::DeleteSnapshot { pool, volume, name } => answer(
                c.snapshot_op(&pool, &volume, &name, SnapshotOp::Delete)
                    .await,
            ),
            Action::CloneVolume {
                pool,
                volume,
                name,
                linked,
            } => answer(c.clone_volume(&pool, &volume, &name, linked).await),
            Action::ImportVolume { pool, name, path } => {
                answer(c.import_volume(&pool, &name, &path).await)
            }
            Action::ListImages => answer(Ok(c.list_images())),
            Action::AddImage(add) => answer(c.add_image(add).await),
            Action::DeleteImage { name } => answer(c.delete_image(&name).await),
            Action::ListVswitches => answer(Ok(c.list_vswitches())),
            Action::CreateVswitch(req) => answer(c.create_vswitch(req).await),
            Action::DeleteVswitch { name } => answer(c.delete_vswitch(&name).await),
            Action::ListJobs => answer(Ok(c.list_jobs().await)),
            Action::GetJob { id } => answer(c.get_job(&id).await),
            Action::CancelJob { id } => answer(c.cancel_job(&id).await),
            Action::ListPlugins => answer(Ok(c.plugin_views())),
            Action::ListDecisions { world, limit } => {
                answer(Ok(c.recent_decisions(world.as_deref(), limit)))
            }
            Action::ListEvents { since, limit } => answer(Ok(c.list_events(since, limit))),
            Action::GetCluster => answer(Ok(c.cluster_answer())),
            Action::CreateCluster(req) => answer(c.create_cluster(req.max_members).await),
            Action::IssueJoinToken(req) => {
                answer(c.issue_join_token(req.ttl_s.unwrap_or(3600)).await)
            }
            Action::RemoveMember { node_id } => answer(c.remove_member(node_id).await),
            Action::JoinCluster(req) => answer(c.join_cluster(req).await),
            Action::ListHosts => answer(Ok(c.list_hosts())),
            Action::SetCordon { host, cordoned } => answer(c.set_cordon(&host, cordoned).await),
            Action::SetMaintenance { host, maintenance } => {
                answer(c.set_maintenance(&host, maintenance).await)
            }
            Action::EvacuateHost { host } => answer(c.evacuate(&host).await),
            Action::MigrateVm { id, migrate } => answer(c.migrate_vm(&id, migrate).await),
            Action::InstallPlugin(req) => answer(c.install_plugin(req).await),
            Action::UninstallPlugin { world } => answer(c.uninstall_plugin(&world).await),
            Action::ResetPlugin { world } => answer(c.reset_plugin(&world).await),
            // Never routed: `NasCore::handle` carries them out for the caller.
            a @ (Action::Whoami
            | Action::Logout
            | Action::ChangePassword(_)
            | Action::ListUsers
            | Action::CreateUser(_)
            | Action::UpdateUser { .. }
            | Action::DeleteUser { .. }
            | Action::ListTokens
            | Action::CreateToken(_)
            | Action::RevokeToken { .. }
            | Action::ListAudit { .. }) => Err(errors::internal(format!(
                "{a:?} reached a host without its caller"
            ))),
            // Routed here: this host's pools are meant.
            Action::OnHost { request, .. } => Box::pin(c.handle_here(*request)).await,
        }
    }
}

#[async_trait::async_trait]
impl nasvisor_api_types::Core for NasCore {
    fn authenticate(&self, credential: Credential<'_>) -> Result<Caller, CoreError> {
        self.inner.authenticate(credential)
    }

    async fn login(&self, login: Login, address: IpAddr) -> Result<SessionView, CoreError> {
        self.inner.login(login, address).await
    }

    fn metrics(&self) -> nasvisor_metrics::State {
        self.inner.metrics_state()
    }

    async fn audit(&self, entry: AuditEntry) {
        // Never holds the answer back: a host without quorum would wait out
        // the store's write timeout for every refused request. An entry
        // that cannot be written is logged whole by `record_audit`.
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.record_audit(entry).await });
    }

    async fn handle(&self, request: &Request, action: Action) -> Result<Answer, CoreError> {
        let c = &self.inner;
        c.check_quorum(&action)?;
        let mut action = match c.handle_access(request, action).await {
            Ok(done) => return done,
            Err(other) => other,
        };
        if let Some(v) = c.read_on_vm_host(&action).await {
            return Ok(v);
        }
        if let Some(host) = c.route(&mut action).await? {
            return c.forward(&host, action).await;
        }
        c.handle_here(action).await
    }

    async fn console(&self, id: String, follow: bool, tail: u64) -> Result<ByteStream, CoreError> {
        let c = &self.inner;
        let vm = c.find_vm(&id)?;
        if let Some(h) = vm.host.as_deref().filter(|h| *h != c.host.id) {
            let rec = c.host_record(h)?;
            return remote_console(c.clone(), rec, vm.id, follow, tail).await;
        }
        c.console_stream(&id, follow, tail).await
    }

    async fn upload_image(
        &self,
        upload: ImageUpload,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        answer(
            self.inner
                .upload_image(upload.name, upload.meta, body)
                .await,
        )
    }

    async fn install_firmware(&self, body: ByteStream) -> Result<Answer, CoreError> {
        answer(self.inner.install_firmware(body).await)
    }

    async fn start_cluster_update(
        &self,
        by: String,
        move_back: bool,
        body: ByteStream,
    ) -> Result<Answer, CoreError> {
        answer(self.inner.start_rollout(by, move_back, body).await)
    }
}

/// How often a console followed on another host is polled.
const REMOTE_CONSOLE_POLL: std::time::Duration = std::time::Duration::from_millis(250);

async fn fetch_console(
    c: &Inner,
    rec: &crate::model::HostRecord,
    id: &str,
    n: u64,
) -> Result<Vec<u8>, CoreError> {
    use base64::Engine as _;
    let call = nasvisor_api_types::peer::Console {
        id: id.to_string(),
        tail: n,
    };
    let v = c
        .call_peer(rec, call, std::time::Duration::from_secs(30))
        .await?;
    base64::engine::general_purpose::STANDARD
        .decode(&v.data)
        .map_err(|e| {
            errors::internal(format!(
                "host {}: the answer to peer call console: data: {e}",
                rec.id
            ))
        })
}

/// What `now` (the last bytes of a console) adds to what was seen, whose
/// end is `seen_tail`: the bytes after the last place `seen_tail` ends in
/// `now`. `None` when it cannot be found (more than the tail was written).
fn console_news<'a>(seen_tail: &[u8], now: &'a [u8]) -> Option<&'a [u8]> {
    if seen_tail.is_empty() {
        return Some(now);
    }
    now.windows(seen_tail.len())
        .rposition(|w| w == seen_tail)
        .map(|at| &now[at + seen_tail.len()..])
}

/// The console of a VM on another host: its last `tail` bytes and, with
/// `follow`, what it prints next (polled over the cluster channel).
async fn remote_console(
    c: Arc<Inner>,
    rec: crate::model::HostRecord,
    id: String,
    follow: bool,
    tail_n: u64,
) -> Result<ByteStream, CoreError> {
    const KEEP: usize = 256;
    const WINDOW: u64 = 65536;
    let first = fetch_console(&c, &rec, &id, tail_n.max(WINDOW)).await?;
    let shown = Bytes::from(tail(first.clone(), tail_n));
    let once = futures_util::stream::once(async move { Ok(shown) });
    if !follow {
        return Ok(Box::pin(once));
    }
    let seen = first[first.len().saturating_sub(KEEP)..].to_vec();
    // State: the core, the host, the VM, the end of what was shown, and
    // whether the host went away (the stream then ends).
    let state = (c, rec, id, seen, false);
    let live = futures_util::stream::unfold(state, |(c, rec, id, seen, gone)| async move {
        if gone {
            return None;
        }
        loop {
            tokio::time::sleep(REMOTE_CONSOLE_POLL).await;
            let now = match fetch_console(&c, &rec, &id, WINDOW).await {
                Ok(b) => b,
                Err(e) => {
                    let note = format!(
                        "\r\n[nasvisor: the console on host {} is gone: {e}]\r\n",
                        rec.id
                    );
                    return Some((Ok(Bytes::from(note)), (c, rec, id, seen, true)));
                }
            };
            let news = match console_news(&seen, &now) {
                Some(n) => n.to_vec(),
                None => {
                    let mut v = b"\r\n[nasvisor: console output skipped]\r\n".to_vec();
                    v.extend_from_slice(&now);
                    v
                }
            };
            if news.is_empty() {
                continue;
            }
            let seen = now[now.len().saturating_sub(KEEP)..].to_vec();
            return Some((Ok(Bytes::from(news)), (c, rec, id, seen, false)));
        }
    });
    Ok(Box::pin(once.chain(live)))
}

#[cfg(test)]
mod tests {
    use super::console_news;

    #[test]
    fn console_news_is_what_follows_the_seen_tail() {
        assert_eq!(console_news(b"", b"abc"), Some(&b"abc"[..]));
        assert_eq!(console_news(b"bc", b"abcde"), Some(&b"de"[..]));
        assert_eq!(console_news(b"bc", b"abc"), Some(&b""[..]));
        // The last occurrence counts (repeated lines).
        assert_eq!(console_news(b"ok\n", b"ok\nok\nx"), Some(&b"x"[..]));
        assert_eq!(console_news(b"zz", b"abc"), None);
    }
}
