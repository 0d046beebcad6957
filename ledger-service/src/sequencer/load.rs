//! Loading the log's state at start and at every new leadership: the tree's right edge from the
//! stored tiles, checked against the latest stored checkpoint.

use crate::db::{CheckpointRow, Db};
use crate::tiles::{Frontier, TileSet};
use provenance_core::checkpoint::Checkpoint;
use provenance_core::note::NoteSigner;

/// Loads the tree's right edge and checks it against the latest stored checkpoint: a log that
/// would contradict a published checkpoint refuses to start.
pub async fn load_frontier(
    db: &Db,
    signer: &NoteSigner,
) -> anyhow::Result<(Frontier, Option<CheckpointRow>)> {
    let size = db.log_size().await?;
    let mut tiles = TileSet::default();
    tiles.extend(db.tiles(&Frontier::tiles_needed(size)).await?);
    let frontier = Frontier::load(size, &tiles)
        .map_err(|e| anyhow::anyhow!("log storage is inconsistent: {e}"))?;
    let latest = db.latest_checkpoint().await?;
    if let Some(cp) = &latest {
        anyhow::ensure!(
            cp.size <= size,
            "stored checkpoint of size {} is beyond the log's {size} entries",
            cp.size
        );
        let parsed = Checkpoint::open(&cp.note, &signer.verifier()).map_err(|e| {
            anyhow::anyhow!(
                "the latest stored checkpoint does not verify with the configured log key: {e}"
            )
        })?;
        let mut stored = TileSet::default();
        let reader = crate::state::TileFetcher { db, cache: None };
        let root = reader.subtree_root(&mut stored, cp.size).await?;
        anyhow::ensure!(
            parsed.root == cp.root && root == cp.root,
            "the log's tree at size {} does not match the published checkpoint",
            cp.size
        );
    }
    Ok((frontier, latest))
}
