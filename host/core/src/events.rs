//! The event log: what happened (a VM crashed, a guest panicked, an install
//! failed...), committed to the cluster store and bounded. [`SeqLog`] owns
//! this host's idea of the next sequence number (of the event log, and of
//! the audit log, `crate::access`); [`Inner::event`] is how the rest of the
//! core records an event.

use crate::db::Db;
use crate::model::{now_rfc3339, EventRecord, Severity};
use crate::Inner;
use nasvisor_api_types::EventView;
use nasvisor_best_effort::BestEffort;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many events are kept.
pub const MAX_EVENTS: u64 = 1000;

fn key(seq: u64) -> String {
    format!("{seq:016}")
}

/// A record of a numbered log.
pub(crate) trait Sequenced: Serialize + DeserializeOwned {
    /// Its sequence number.
    fn seq(&self) -> u64;
    /// Sets its sequence number.
    fn set_seq(&mut self, seq: u64);
}

/// A bounded, numbered log in the store (the event log, the audit log) as
/// this host appends to it.
pub(crate) struct SeqLog {
    kind: &'static str,
    /// How many records are kept.
    max: u64,
    /// The last sequence number this host knows taken.
    seq: AtomicU64,
}

impl SeqLog {
    /// The log of records of `kind`, the last `max` kept.
    pub const fn new(kind: &'static str, max: u64) -> Self {
        Self {
            kind,
            max,
            seq: AtomicU64::new(0),
        }
    }

    fn last_seq(&self, db: &Db) -> u64 {
        db.store()
            .list(self.kind)
            .last()
            .and_then(|(k, _, _)| k.parse::<u64>().ok())
            .unwrap_or(0)
    }

    /// Starts numbering after the last record in `db` (at start, and when
    /// the host changed stores by joining a cluster).
    pub fn init(&self, db: &Db) {
        self.seq.store(self.last_seq(db), Ordering::SeqCst);
    }

    /// Appends `rec` (its `seq` is set here); false when it could not be
    /// recorded (logged). Every host appends: a sequence number is taken
    /// with a create-only write, and taken again when another host got it
    /// first.
    pub async fn append<T: Sequenced>(&self, db: &Db, mut rec: T) -> bool {
        for _ in 0..8 {
            let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
            rec.set_seq(seq);
            match db.put(self.kind, &key(seq), &rec, Some(0)).await {
                Ok(_) => {
                    if seq > self.max {
                        db.delete(self.kind, &key(seq - self.max))
                            .await
                            .best_effort("drop the oldest record of a log");
                    }
                    return true;
                }
                Err(nasvisor_api_types::CoreError::Conflict { .. }) => {
                    // Catch up with the others.
                    self.seq.fetch_max(self.last_seq(db), Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(log = self.kind, error = %e, "cannot append to a log");
                    return false;
                }
            }
        }
        tracing::error!(
            log = self.kind,
            "cannot append to a log: the sequence kept moving"
        );
        false
    }

    /// Records after `since` (all kept ones when `None`: the last `limit`),
    /// oldest first.
    pub fn list<T: Sequenced, V>(
        &self,
        db: &Db,
        since: Option<u64>,
        limit: u32,
        view: impl Fn(&T) -> V,
    ) -> Vec<V> {
        let all: Vec<T> = db.list(self.kind);
        let limit = limit.max(1) as usize;
        let picked: Vec<&T> = match since {
            Some(s) => all.iter().filter(|e| e.seq() > s).take(limit).collect(),
            None => all.iter().skip(all.len().saturating_sub(limit)).collect(),
        };
        picked.into_iter().map(view).collect()
    }
}

impl Sequenced for EventRecord {
    fn seq(&self) -> u64 {
        self.seq
    }
    fn set_seq(&mut self, seq: u64) {
        self.seq = seq;
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
        self.events.list(&self.db, since, limit, EventRecord::view)
    }
}
