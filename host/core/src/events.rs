//! The event log: what happened (a VM crashed, a guest panicked, an install
//! failed...), committed to the cluster store and bounded.

use crate::model::{kind, now_rfc3339, EventRecord, Severity};
use crate::Inner;
use nasvisor_api_types::EventView;
use nasvisor_best_effort::BestEffort;
use std::sync::atomic::Ordering;

/// How many events are kept.
pub const MAX_EVENTS: u64 = 1000;

fn key(seq: u64) -> String {
    format!("{seq:016}")
}

impl Inner {
    fn last_event_seq(&self) -> u64 {
        self.db
            .store()
            .list(kind::EVENT)
            .last()
            .and_then(|(k, _, _)| k.parse::<u64>().ok())
            .unwrap_or(0)
    }

    pub(crate) fn init_event_seq(&self) {
        self.event_seq
            .store(self.last_event_seq(), Ordering::SeqCst);
    }

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
        // Every host appends: a sequence number is taken with a create-only
        // write, and taken again when another host got it first.
        for _ in 0..8 {
            let seq = self.event_seq.fetch_add(1, Ordering::SeqCst) + 1;
            let rec = EventRecord {
                seq,
                time: now_rfc3339(),
                kind: kind_.to_string(),
                severity,
                target: target.clone(),
                message: message.clone(),
                host: Some(self.host.id.clone()),
            };
            match self.db.put(kind::EVENT, &key(seq), &rec, Some(0)).await {
                Ok(_) => {
                    if seq > MAX_EVENTS {
                        self.db
                            .delete(kind::EVENT, &key(seq - MAX_EVENTS))
                            .await
                            .best_effort("drop the oldest event");
                    }
                    return;
                }
                Err(nasvisor_api_types::CoreError::Conflict { .. }) => {
                    // Catch up with the others.
                    let last = self.last_event_seq();
                    self.event_seq.fetch_max(last, Ordering::SeqCst);
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot record an event");
                    return;
                }
            }
        }
        tracing::error!(
            kind = kind_,
            "cannot record an event: the sequence kept moving"
        );
    }

    /// Events after `since` (all kept ones when `None`: the last `limit`).
    pub(crate) fn list_events(&self, since: Option<u64>, limit: u32) -> Vec<EventView> {
        let all: Vec<EventRecord> = self.db.list(kind::EVENT);
        let limit = limit.max(1) as usize;
        let picked: Vec<&EventRecord> = match since {
            Some(s) => all.iter().filter(|e| e.seq > s).take(limit).collect(),
            None => all.iter().skip(all.len().saturating_sub(limit)).collect(),
        };
        picked.into_iter().map(EventRecord::view).collect()
    }
}
