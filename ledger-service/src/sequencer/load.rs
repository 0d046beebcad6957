//! Loading the log's state at start and at every new leadership: its shards, and the open
//! shard's tree's right edge from the stored tiles, checked against its latest stored
//! checkpoint.

use crate::db::{CheckpointRow, Db, ShardRow};
use crate::tiles::{Frontier, TileSet};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::NoteSigner;

/// The log's shards (the last is open). A leader first stores shard 0 if the log has none.
pub async fn load_shards(db: &Db, origin: &str, leader: bool) -> anyhow::Result<Vec<ShardRow>> {
    if leader {
        db.ensure_first_shard(origin).await?;
    }
    Ok(db.shards(origin).await?)
}

/// Loads the open shard's tree's right edge and checks it against its latest stored
/// checkpoint: a log that would contradict a published checkpoint refuses to start. `signer`
/// is the log key under the log's origin.
pub async fn load_frontier(
    db: &Db,
    signer: &NoteSigner,
    shard: &ShardRow,
) -> anyhow::Result<(Frontier, Option<CheckpointRow>)> {
    let total = db.log_size().await?;
    let size = total.checked_sub(shard.base).ok_or_else(|| {
        anyhow::anyhow!(
            "log storage is inconsistent: shard {} starts at entry {}, beyond the log's {total} entries",
            shard.number,
            shard.base
        )
    })?;
    if let Some(f) = shard.final_size {
        anyhow::ensure!(
            f == size,
            "log storage is inconsistent: the closed shard {} has {f} entries, the log {size} after its base",
            shard.number
        );
    }
    let mut tiles = TileSet::default();
    tiles.extend(
        db.tiles(shard.number, &Frontier::tiles_needed(size))
            .await?,
    );
    let frontier = Frontier::load(size, &tiles)
        .map_err(|e| anyhow::anyhow!("log storage is inconsistent: {e}"))?;
    let latest = db.latest_checkpoint(shard.number).await?;
    if let Some(cp) = &latest {
        anyhow::ensure!(
            cp.size <= size,
            "stored checkpoint of size {} is beyond the shard's {size} entries",
            cp.size
        );
        let key = signer.verifier().renamed(&shard.origin)?;
        let parsed = Checkpoint::open(&cp.note, &key).map_err(|e| {
            anyhow::anyhow!(
                "the latest stored checkpoint does not verify with the configured log key: {e}"
            )
        })?;
        let mut stored = TileSet::default();
        let reader = crate::state::TileFetcher {
            db,
            cache: None,
            shard: shard.number,
        };
        let root = reader.subtree_root(&mut stored, cp.size).await?;
        anyhow::ensure!(
            parsed.root == cp.root && root == cp.root,
            "the log's tree at size {} does not match the published checkpoint",
            cp.size
        );
    }
    Ok((frontier, latest))
}
