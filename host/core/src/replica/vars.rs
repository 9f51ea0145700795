//! An HA UEFI VM's variable store (boot entries, Secure Boot keys, the
//! firmware's counters: `nvram/<id>.fd`, the VM's `pflash1`) kept on its
//! passive host, so that a failover starts the guest with the variables it
//! had, not the template's.
//!
//! The active host reads the store every [`VARS_EVERY`] and, when its bytes
//! differ from what it last sent that passive host, sends them
//! (`replica-vars`). The passive host checks them and replaces its copy
//! atomically (mode 0600, a temporary file, fsync, rename). QEMU writes the store in
//! place, a few bytes per variable: a read is taken twice and sent only
//! when both agree, so a copy torn by a write in progress is not sent.
//! Variables change seldom (an OS install, a boot order change, a counter
//! at each boot); a failover within [`VARS_EVERY`] of a change starts with
//! the store before it.
//!
//! This holds for every HA UEFI VM, on a shared pool too: the store lives
//! in the host's data directory, not in a pool.

use crate::errors;
use crate::model::{kind, Firmware, VmRecord};
use crate::Inner;
use base64::Engine;
use nasvisor_api_types::peer::ReplicaVars;
use nasvisor_api_types::CoreError;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How often the active host looks for changed variables.
pub const VARS_EVERY: Duration = Duration::from_secs(5);
/// How long the passive host may take to take them.
const SEND_TIMEOUT: Duration = Duration::from_secs(15);
/// The largest variable store taken (OVMF's is 528 KiB or 4 MiB).
const MAX_VARS: usize = 16 << 20;

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

/// The store at `path`, read twice: `None` while it changes under the read
/// (or cannot be read).
fn read_settled(path: &Path) -> Option<Vec<u8>> {
    let a = std::fs::read(path).ok()?;
    let b = std::fs::read(path).ok()?;
    (a == b).then_some(a)
}

impl Inner {
    fn vars_path(&self, id: &str) -> PathBuf {
        self.cfg.nvram_dir().join(format!("{id}.fd"))
    }

    /// `replica-vars` on the passive host: keeps VM `req.id`'s variable
    /// store as the one a failover here starts with.
    pub(crate) fn keep_replica_vars(&self, req: ReplicaVars) -> Result<(), CoreError> {
        let vm = self.passive_here(&req.id, "UEFI variables")?;
        if vm.firmware != Firmware::Uefi {
            return Err(errors::invalid(
                "id",
                format!("VM {} boots with BIOS: it has no UEFI variables", vm.name),
            ));
        }
        if req.data.len() > MAX_VARS.div_ceil(3) * 4 {
            return Err(errors::invalid(
                "data",
                format!("a variable store over {} MiB", MAX_VARS >> 20),
            ));
        }
        let data = base64::engine::general_purpose::STANDARD
            .decode(&req.data)
            .map_err(|e| errors::invalid("data", format!("not base64: {e}")))?;
        if data.is_empty() {
            return Err(errors::invalid("data", "an empty variable store"));
        }
        if sha256_hex(&data) != req.sha256 {
            return Err(errors::invalid(
                "sha256",
                "the variable store does not match its SHA-256 (damaged on the way)",
            ));
        }
        let path = self.vars_path(&vm.id);
        if let Err(e) = nasvisor_best_effort::write_private(&path, &data) {
            return Err(errors::internal(format!(
                "keeping VM {}'s UEFI variables in {}: {e}",
                vm.name,
                path.display()
            )));
        }
        tracing::debug!(vm = %vm.name, bytes = data.len(), "UEFI variables kept for a failover");
        Ok(())
    }

    /// Starts the task that sends the variable stores of the HA UEFI VMs
    /// running here to their passive hosts.
    pub(crate) fn spawn_vars_sync(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            // What each VM's passive host last took: (passive, SHA-256).
            let mut sent: HashMap<String, (String, String)> = HashMap::new();
            // The last failure told of, per VM (told once, not every round).
            let mut told: HashMap<String, String> = HashMap::new();
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(VARS_EVERY) => {}
                }
                let Some(me) = weak.upgrade() else { break };
                me.send_changed_vars(&mut sent, &mut told).await;
            }
        });
    }

    async fn send_changed_vars(
        &self,
        sent: &mut HashMap<String, (String, String)>,
        told: &mut HashMap<String, String>,
    ) {
        let vms: Vec<VmRecord> = self
            .db
            .list::<VmRecord>(kind::VM)
            .into_iter()
            .filter(|v| {
                v.ha && v.firmware == Firmware::Uefi
                    && v.host.as_deref() == Some(self.host.id.as_str())
                    && self.processes.contains(&v.id)
            })
            .collect();
        sent.retain(|id, _| vms.iter().any(|v| v.id == *id));
        told.retain(|id, _| vms.iter().any(|v| v.id == *id));
        for vm in vms {
            let Some(passive) = vm.passive.clone().filter(|p| *p != self.host.id) else {
                continue;
            };
            if self.lost_host(&passive).is_some() {
                continue;
            }
            let Some(data) = read_settled(&self.vars_path(&vm.id)) else {
                continue;
            };
            let sha256 = sha256_hex(&data);
            if sent.get(&vm.id) == Some(&(passive.clone(), sha256.clone())) {
                continue;
            }
            let Ok(rec) = self.host_record(&passive) else {
                continue;
            };
            let call = ReplicaVars {
                id: vm.id.clone(),
                data: base64::engine::general_purpose::STANDARD.encode(&data),
                sha256: sha256.clone(),
            };
            match self.call_peer(&rec, call, SEND_TIMEOUT).await {
                Ok(()) => {
                    tracing::info!(vm = %vm.name, passive = %passive, "UEFI variables sent to the passive host");
                    sent.insert(vm.id.clone(), (passive, sha256));
                    told.remove(&vm.id);
                }
                Err(e) => {
                    let text = format!("{passive}: {e}");
                    if told.get(&vm.id) != Some(&text) {
                        tracing::warn!(vm = %vm.name, passive = %passive, error = %e, "cannot send the UEFI variables to the passive host (tried again every 5 s)");
                        told.insert(vm.id.clone(), text);
                    }
                }
            }
        }
    }
}
