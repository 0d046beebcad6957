//! The sequencer's side rows of alert changes, and failing a whole batch's work.

use super::Sequencer;
use crate::alerts::{self, Change};
use crate::db::SideRow;
use crate::mailbox::{SequenceError, Work};

impl Sequencer {
    /// The rows of an alert change: the alert, its transition and one outbox message per
    /// subscribed endpoint (all written with the batch).
    pub(super) fn change_rows(
        &self,
        c: &Change,
        now: u64,
        reading: Option<u64>,
        out: &mut Vec<SideRow>,
    ) {
        out.push(SideRow::Alert(c.alert.clone()));
        let Some((t, actor)) = &c.transition else {
            return;
        };
        out.push(SideRow::AlertEvent {
            alert_id: c.alert.id.clone(),
            seq: c.alert.events,
            at: now,
            transition: t.as_str(),
            actor: actor.clone(),
            severity: c.alert.severity,
            reading_index: reading,
        });
        let (event_type, payload) = alerts::payload(&c.alert, *t, now, |p| self.shared.url(p));
        let subscribers = self.shared.subscribers(&event_type);
        if subscribers.is_empty() {
            return;
        }
        let mut id = [0u8; 16];
        rand_core::RngCore::fill_bytes(&mut rand_core::OsRng, &mut id);
        let msg_id = format!("msg_{}", hex::encode(id));
        for endpoint_id in subscribers {
            out.push(SideRow::Outbox {
                msg_id: msg_id.clone(),
                endpoint_id,
                event_type: event_type.clone(),
                payload: payload.clone(),
                at: now,
            });
        }
    }
}

/// Answers every piece of work with `err`.
pub(super) fn fail_all(work: Vec<Work>, err: &SequenceError) {
    for w in work {
        match w {
            Work::Readings(_, reply) | Work::Private(_, reply) => {
                let _ = reply.send(Err(err.clone()));
            }
            Work::Registry(_, reply) => {
                let _ = reply.send(Err(err.clone()));
            }
            Work::Alert(_, reply) => {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }
}
