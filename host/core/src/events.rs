//! The event log: what happened (a VM crashed, a guest panicked, an install
//! failed...), committed to the cluster store and bounded. [`EventLog`] owns
//! this host's idea of the next sequence number; [`Inner::event`] is how the
//! rest of the core records one.

use crate::db::Db;
use crate::model::{kind, now_rfc3339, EventRecord, Severity};
use crate::Inner;
use nasvisor_api_types::EventView;
use nasvisor_best_effort::BestEffort;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many events are kept.
pub const MAX_EVENTS: u64 = 1000;

fn key(seq: u64) -> String {
    format!("{seq:016}")
}

/// The event log as this host appends to it.
#[derive(Default)]
pub(crate) struct EventLog {
    /// The last sequence number this host knows taken.
    seq: AtomicU64,
}

impl EventLog {
    fn last_seq(db: &Db) -> u64 {
        db.store()
            .list(kind::EVENT)
            .last()
            .and_then(|(k, _, _)| k.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Starts numbering after the last event in `db` (at start, and when
    /// the host changed stores by joining a cluster).
    pub fn init(&self, db: &Db) {
        self.seq.store(Self::last_seq(db), Ordering::SeqCst);
    }

    /// Appends `rec` (its `seq` is set here). Every host appends: a
    /// sequence number is taken with a create-only write, and taken again
    /// when another host got it first.
    async fn append(&self, db: &Db, mut rec: EventRecord) {
        for _ in 0..8 {
            let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            rec.seq = seq;
            match db.put(kind::EVENT, &key(seq), &rec, Some(0)).await {
                Ok(_) => {
                    if seq > MAX_EVENTS {
                        db.delete(kind::EVENT, &key(seq - MAX_EVENTS))
                            .await
                            .best_effort("drop the oldest event");
                    }
                    return;
                }
                Err(nasvisor_api_types::CoreError::Conflict { .. }) => {
                    // Catch up with the others.
                    self.seq.fetch_max(Self::last_seq(db), Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot record an event");
                    return;
                }
            }
        }
        tracing::error!(
            kind = %rec.kind,
            "cannot record an event: the sequence kept moving"
        );
    }

    /// Events after `since` (all kept ones when `None`: the last `limit`).
    pub fn list(db: &Db, since: Option<u64>, limit: u32) -> Vec<EventView> {
        let all: Vec<EventRecord> = db.list(kind::EVENT);
        let limit = limit.max(1) as usize;
        let picked: Vec<&EventRecord> = match since {
            Some(s) => all.iter().filter(|e| e.seq > s).take(limit).collect(),
            None => all.iter().skip(all.len().saturating_sub(limit)).collect(),
        };
        picked.into_iter().map(EventRecord::view).collect()
    }
}

impl Inner {
    /// Records an event (and logs it). Never fails the caller.
    pub(crate) async fn event(
        &self,
        kind_: &str,
        severity: Severity,
        target: Option<String>,
        message: impl Into<String>,
    ) {
        let message = message.into();
        match severity {
            Severity::Error => tracing::error!(kind = kind_, ?target, %message, "event"),
            Severity::Warning => tracing::warn!(kind = kind_, ?target, %message, "event"),
            Severity::Info => tracing::info!(kind = kind_, ?target, %message, "event"),
        }
        let rec = EventRecord {
            seq: 0,
            time: now_rfc3339(),
            kind: kind_.to_string(),
            severity,
            target,
            message,
            host: Some(self.host.id.clone()),
        };
        self.events.append(&self.db, rec).await;
    }

    /// Events after `since` (all kept ones when `None`: the last `limit`).
    pub(crate) fn list_events(&self, since: Option<u64>, limit: u32) -> Vec<EventView> {
        EventLog::list(&self.db, since, limit)
    }
}
