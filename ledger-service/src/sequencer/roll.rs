//! Shard roll-over (issue #18): at the open shard's period end, the sequencer closes it with a
//! final checkpoint and opens the next shard, whose first batch logs its shard start (entry 0:
//! period, base, the closed shard's final signed checkpoint) and carries every registry event
//! logged before it (original position and leaf data), then publishes its first checkpoint. So
//! each shard verifies on its own, and a closed shard never takes another entry.
//!
//! Crash safety: closing is one transaction (final checkpoint + the shard's final size); opening
//! is the first batch of the next shard (its entries, tiles and shard row). A crash between the
//! two leaves a closed shard with no successor: the next leader opens it from the stored final
//! checkpoint.

use super::Sequencer;
use crate::db::{Batch, CheckpointRow, EntryRow, ShardRow, SideRow};
use crate::state::now_ms;
use crate::tiles::{Frontier, TileSet};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::log_entry::{EntryKind, LogEntry};
use provenance_core::merkle;
use provenance_core::registry_state::registry_extension;
use provenance_core::shard::{shard_origin, Carried, Period, ShardStart};
use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// How the log is sharded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sharding {
    /// A shard per period.
    pub period: Period,
    /// Readings measured up to this long before a shard's start are still taken by it, ms.
    pub grace_ms: u64,
}

impl Sequencer {
    /// Whether the open shard is to be closed at `now`: its period ended, it is closed already
    /// (a roll-over cut short), or the log is sharded and its shard has no period.
    pub(super) fn roll_due(&self, now: u64) -> bool {
        self.cfg.sharding.is_some()
            && (!self.shard.has_period()
                || now >= self.shard.end_ms
                || self.shard.final_size.is_some())
    }

    /// Closes the open shard and opens the next. On a failure nothing is acknowledged that is
    /// not durable: a failed close is retried at the next tick; a failed open (or a close that
    /// another leader made) reloads the log's state.
    pub(super) async fn roll(&mut self) {
        let Some(sharding) = self.cfg.sharding else {
            return;
        };
        let now = now_ms().max(self.last_logged_at + 1);
        let last = match self.close(now).await {
            Ok(Some(cp)) => cp,
            Ok(None) => return,
            Err(e) => {
                tracing::error!(error = %e, shard = %self.shard.origin, "cannot close the shard; reloading the log's state");
                self.must_reload = true;
                return;
            }
        };
        let (start_ms, end_ms, name) = sharding.period.span(now);
        if self.shard.has_period() && name <= self.shard.name {
            tracing::error!(shard = %self.shard.origin, next = %name, "the clock is before the closed shard's period: not opening a shard yet");
            return;
        }
        let base = self.shard.base + last.size;
        let next = ShardRow {
            number: self.shard.number + 1,
            origin: shard_origin(&self.shared.origin, &name),
            name,
            start_ms,
            end_ms,
            grace_ms: sharding.grace_ms,
            base,
            final_size: None,
        };
        match self.open(next, &last, now).await {
            Ok(()) => {}
            Err(e) => {
                tracing::error!(error = %e, "cannot open the next shard; reloading the log's state");
                self.must_reload = true;
            }
        }
    }

    /// Signs and stores the open shard's final checkpoint and marks it closed (or, if it was
    /// closed already, reads that checkpoint back). `None`: not closed now (retried later).
    async fn close(&mut self, now: u64) -> anyhow::Result<Option<CheckpointRow>> {
        if let Some(size) = self.shard.final_size {
            let cp = self
                .shared
                .db
                .checkpoint_at(self.shard.number, size)
                .await?
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "shard {} is closed at size {size}, but that checkpoint is not stored",
                        self.shard.number
                    )
                })?;
            return Ok(Some(cp));
        }
        let size = self.frontier.size();
        let root = self.frontier.root();
        let cp = Checkpoint {
            origin: self.signer.name().to_string(),
            size,
            root,
            extensions: vec![registry_extension(
                self.snapshot.event_count(),
                &self.snapshot.registry_root(),
            )],
        };
        let note = cp.sign(&self.signer)?;
        let row = CheckpointRow::signed(self.shard.number, size, root, note);
        if !self.shared.db.close_shard(&row, now).await? {
            anyhow::bail!("shard {} was closed by another leader", self.shard.number);
        }
        tracing::info!(shard = %self.shard.origin, size, "shard closed with its final checkpoint");
        self.shard.final_size = Some(size);
        let mut shards = (*self.shared.shards()).clone();
        if let Some(s) = shards.last_mut() {
            s.final_size = Some(size);
        }
        self.shared.set_shards(shards);
        Ok(Some(row))
    }

    /// Logs the next shard's start and the carried registry in one batch, then publishes its
    /// first checkpoint.
    async fn open(&mut self, next: ShardRow, last: &CheckpointRow, now: u64) -> anyhow::Result<()> {
        let signer = self.base_signer.renamed(&next.origin)?;
        let start = ShardStart {
            name: next.name.clone(),
            start_ms: next.start_ms,
            end_ms: next.end_ms,
            grace_ms: next.grace_ms,
            base: next.base,
            previous_origin: self.shard.origin.clone(),
            previous_checkpoint: last
                .note
                .strip_suffix(last.cosignatures.as_str())
                .unwrap_or(&last.note)
                .to_string(),
            previous_base: self.shard.base,
        };
        let mut bodies = vec![(EntryKind::ShardStart, start.to_cbor())];
        for (position, leaf_data) in self.shared.db.registry_entries_before(next.base).await? {
            bodies.push((
                EntryKind::Carried,
                Carried {
                    position,
                    leaf_data,
                }
                .to_cbor(),
            ));
        }
        let mut frontier = Frontier::load(0, &TileSet::default()).map_err(anyhow::Error::msg)?;
        let mut dirty = BTreeSet::new();
        let mut batch = Batch {
            fence: self.fence,
            shard: next.number,
            ..Batch::default()
        };
        for (kind, body) in bodies {
            let leaf_data = LogEntry {
                kind,
                body,
                logged_at_ms: now,
            }
            .to_cbor();
            batch.entries.push(EntryRow {
                idx: next.base + frontier.size(),
                kind: kind as i16,
                logged_at: now,
                leaf_data: leaf_data.clone(),
            });
            frontier.push(merkle::leaf_hash(&leaf_data), &mut dirty);
        }
        batch.tiles = frontier.take_dirty(&mut dirty);
        batch.side.push(SideRow::OpenShard(next.clone()));
        self.shared.db.commit_batch(&batch).await?;
        tracing::info!(shard = %next.origin, base = next.base, carried = batch.entries.len() - 1, "shard opened");
        self.last_logged_at = now;
        self.frontier = frontier;
        self.signer = signer;
        self.shard = next.clone();
        let mut shards = (*self.shared.shards()).clone();
        shards.push(next);
        self.shared.set_shards(shards);
        self.shared
            .committed_size
            .store(self.shard.base + self.frontier.size(), Ordering::SeqCst);
        self.last_checkpoint = (0, Instant::now());
        self.publish().await;
        Ok(())
    }
}
