//! Writes log archives (`provenance_core::archive`): the entries `[start, end)` where `end` is
//! the latest checkpoint's size, the frontier of `[0, start)` from the stored tiles, and the
//! registry entries before `start` with their inclusion proofs. The manifest is written last,
//! through a temporary file, so a folder with a manifest is a whole archive.

use crate::db::{CheckpointRow, Db};
use crate::state::{now_ms, TileFetcher};
use crate::tiles::TileSet;
use base64::{engine::general_purpose::STANDARD as B64, Engine};
use provenance_core::archive::{
    entry_file_name, ArchiveManifest, EntryLine, ARCHIVE_MEDIA_TYPE, ENTRIES_PER_FILE,
    MANIFEST_FILE,
};
use provenance_core::bundle::ProvedEntry;
use provenance_core::log_entry::EntryKind;
use provenance_core::merkle;
use provenance_core::tlog_proof::TlogProof;
use std::io::Write;
use std::path::Path;

/// Entries read from the database per query.
const PAGE: u64 = 10_000;

/// Writes the archive of `[start, latest checkpoint size)` into `dir` (created; must not hold a
/// manifest yet). Returns its manifest.
pub async fn write_log_archive(db: &Db, dir: &Path, start: u64) -> anyhow::Result<ArchiveManifest> {
    write_cosigned_log_archive(db, dir, start, 0).await
}

/// The same, cut at the latest checkpoint at least `quorum` witnesses cosigned (what the
/// service publishes with that quorum), carrying their cosignatures.
pub async fn write_cosigned_log_archive(
    db: &Db,
    dir: &Path,
    start: u64,
    quorum: usize,
) -> anyhow::Result<ArchiveManifest> {
    let cp = db
        .latest_cosigned_checkpoint_of_any_shard(quorum as u64)
        .await?
        .ok_or_else(|| match quorum {
            0 => anyhow::anyhow!("the log has no checkpoint yet"),
            q => anyhow::anyhow!("no checkpoint cosigned by {q} witnesses yet"),
        })?;
    write_log_archive_at(db, dir, start, &cp).await
}

/// Writes the archive of `[start, cp.size)` cut at the stored checkpoint `cp`.
pub async fn write_log_archive_at(
    db: &Db,
    dir: &Path,
    start: u64,
    cp: &CheckpointRow,
) -> anyhow::Result<ArchiveManifest> {
    // A shard's archive is of its own tree: positions within it (ledger position = base + i).
    let base = db.shard_base(cp.shard).await?;
    let end = cp.size;
    anyhow::ensure!(
        start <= end,
        "--from {start} is past the latest checkpoint ({end} entries)"
    );
    anyhow::ensure!(
        !dir.join(MANIFEST_FILE).exists(),
        "{} already holds an archive",
        dir.display()
    );
    std::fs::create_dir_all(dir.join("log"))?;
    let tiles = TileFetcher {
        db,
        cache: None,
        shard: cp.shard,
    };
    let mut set = TileSet::default();
    let frontier = tiles
        .with_tiles(&mut set, |r| merkle::frontier(r, start))
        .await??;

    // The registry before `start`, each entry proved against the checkpoint (in a shard, with
    // its start: entry 0 gives the ledger base and the previous shard's final checkpoint).
    let mut registry_prelude = Vec::new();
    let mut prelude = Vec::new();
    for kind in [
        EntryKind::Registry,
        EntryKind::Carried,
        EntryKind::ShardStart,
    ] {
        prelude.extend(
            db.entries_range(base, base + start, Some(kind as i16), u64::MAX >> 2)
                .await?,
        );
    }
    prelude.sort_unstable_by_key(|(i, _)| *i);
    for (idx, leaf) in prelude {
        let idx = idx - base;
        let hashes = tiles
            .with_tiles(&mut set, |r| merkle::inclusion_proof(r, idx, end))
            .await??;
        let proof = TlogProof {
            extra: None,
            index: idx,
            hashes,
            checkpoint: cp.note.clone(),
        };
        registry_prelude.push(ProvedEntry::new(&leaf, &proof));
    }

    // The entries, ENTRIES_PER_FILE to a file.
    let mut entry_files = Vec::new();
    let mut next = start;
    let mut file: Option<std::io::BufWriter<std::fs::File>> = None;
    while next < end {
        let page = db
            .entries_range(base + next, base + end, None, PAGE)
            .await?;
        anyhow::ensure!(
            page.first().is_some_and(|(i, _)| *i == base + next),
            "entry {next} is missing from the database"
        );
        for (idx, leaf) in page {
            let idx = idx - base;
            anyhow::ensure!(idx == next, "entry {next} is missing from the database");
            if idx == start || idx % ENTRIES_PER_FILE == 0 {
                if let Some(mut f) = file.take() {
                    f.flush()?;
                    f.get_ref().sync_all()?;
                }
                let name = entry_file_name(idx);
                file = Some(std::io::BufWriter::new(std::fs::File::create(
                    dir.join(&name),
                )?));
                entry_files.push(name);
            }
            let line = if leaf.is_empty() {
                // A pruned reading: its leaf hash stays in the tiles, and the archive says so.
                let hash = tiles
                    .with_tiles(&mut set, |r| {
                        r.node(0, idx).ok_or(merkle::ProofError::MissingHash {
                            level: 0,
                            index: idx,
                        })
                    })
                    .await??;
                EntryLine::encode_pruned(idx, &hash)
            } else {
                EntryLine::encode(idx, &leaf)
            };
            if let Some(f) = file.as_mut() {
                f.write_all(line.as_bytes())?;
                f.write_all(b"\n")?;
            }
            next += 1;
        }
    }
    if let Some(mut f) = file.take() {
        f.flush()?;
        f.get_ref().sync_all()?;
    }
    let manifest = ArchiveManifest {
        media_type: ARCHIVE_MEDIA_TYPE.into(),
        origin: provenance_core::checkpoint::Checkpoint::from_text(
            provenance_core::note::split(&cp.note)?.text,
        )?
        .origin,
        start,
        end,
        checkpoint: cp.note.clone(),
        frontier: frontier.iter().map(|h| B64.encode(h)).collect(),
        entry_files,
        registry_prelude,
        created_at_ms: now_ms(),
    };
    let tmp = dir.join("manifest.json.tmp");
    std::fs::write(&tmp, manifest.to_json())?;
    std::fs::File::open(&tmp)?.sync_all()?;
    std::fs::rename(&tmp, dir.join(MANIFEST_FILE))?;
    Ok(manifest)
}
