//! The durable store-and-forward spool.
//!
//! One append-only file of records `[len: u32 LE][crc32: u32 LE][envelope]`, and a cursor file
//! holding the byte offset of the first record not yet acknowledged by the service. A frame
//! counts as received only after its record is fsynced; the cursor moves (and is fsynced) only
//! after the service acknowledged the batch, so a crash at any point loses nothing and at worst
//! re-sends a batch, which the service answers as duplicates. A torn record at the end (a crash
//! in the middle of an append, before it was acknowledged) is cut off when the spool is opened.
//! The spool is bounded: when it holds `max_records` unsent records it refuses new ones.
//!
//! Once everything is acknowledged and the log has grown past the compaction size, the log is
//! emptied. Whatever the caller derives from the records (the gateway's replay marks) must be
//! saved first: [`Spool::ack`] runs the caller's `before_compact` and compacts only if it
//! succeeded.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    /// The spool holds its maximum of unsent records.
    #[error("spool is full ({0} unsent records)")]
    Full(usize),
    /// I/O error.
    #[error("spool I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// A spooled record: where it ends (the cursor after it) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Offset just past this record.
    pub end: u64,
    /// The envelope.
    pub bytes: Vec<u8>,
}

/// The spool.
pub struct Spool {
    dir: PathBuf,
    log: File,
    len: u64,
    /// Offsets of the unsent records' starts, in order.
    pending: std::collections::VecDeque<u64>,
    max_records: usize,
    compact_at: u64,
}

const HEADER: u64 = 8;
/// Largest record accepted.
pub const MAX_RECORD: usize = 64 * 1024;
/// Default size past which a fully acknowledged log is emptied.
pub const COMPACT_AT: u64 = 64 * 1024 * 1024;

/// Writes a small file atomically and durably (temporary file, fsync, rename, fsync the folder).
pub fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, cutting off a torn tail.
    pub fn open(dir: &Path, max_records: usize) -> Result<Self, SpoolError> {
        fs::create_dir_all(dir)?;
        let path = dir.join("spool.log");
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&path)?;
        let cursor = fs::read_to_string(dir.join("cursor"))
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        // Scan every record; the valid prefix is the log.
        let mut data = Vec::new();
        log.seek(SeekFrom::Start(0))?;
        log.read_to_end(&mut data)?;
        let records = scan(&data);
        let pos = records
            .last()
            .map_or(0, |&(start, len)| start + HEADER as usize + len);
        let valid = pos as u64;
        if valid < data.len() as u64 {
            tracing::warn!(
                cut = data.len() as u64 - valid,
                "spool: cutting a torn record at the end (never acknowledged as received)"
            );
            log.set_len(valid)?;
            log.sync_all()?;
        }
        let cursor = cursor.min(valid);
        let pending = records
            .into_iter()
            .map(|(start, _)| start as u64)
            .filter(|o| *o >= cursor)
            .collect();
        Ok(Self {
            dir: dir.to_path_buf(),
            log,
            len: valid,
            pending,
            max_records,
            compact_at: COMPACT_AT,
        })
    }

    /// Sets the size past which a fully acknowledged log is emptied (tests use a small one).
    pub fn compact_at(mut self, bytes: u64) -> Self {
        self.compact_at = bytes;
        self
    }

    /// Bytes in the log (sent and unsent records).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the log holds no record at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Unsent records.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Appends records and fsyncs once (group commit). All or none: on error nothing counts.
    pub fn append(&mut self, items: &[Vec<u8>]) -> Result<(), SpoolError> {
        if self.pending.len() + items.len() > self.max_records {
            return Err(SpoolError::Full(self.pending.len()));
        }
        let mut buf = Vec::new();
        let mut starts = Vec::with_capacity(items.len());
        for it in items {
            if it.len() > MAX_RECORD {
                return Err(SpoolError::Io(std::io::Error::other("record too large")));
            }
            starts.push(self.len + buf.len() as u64);
            buf.extend_from_slice(&(it.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc32fast::hash(it).to_le_bytes());
            buf.extend_from_slice(it);
        }
        if let Err(e) = self.log.write_all(&buf).and_then(|()| self.log.sync_data()) {
            // Cut whatever was partly written, so the log stays a valid prefix.
            let _ = self.log.set_len(self.len);
            return Err(e.into());
        }
        self.len += buf.len() as u64;
        self.pending.extend(starts);
        Ok(())
    }

    /// Up to `max` unsent records, oldest first.
    pub fn peek(&mut self, max: usize) -> Result<Vec<Record>, SpoolError> {
        let mut out = Vec::new();
        for &start in self.pending.iter().take(max) {
            self.log.seek(SeekFrom::Start(start))?;
            let mut head = [0u8; 8];
            self.log.read_exact(&mut head)?;
            let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let mut bytes = vec![0u8; len];
            self.log.read_exact(&mut bytes)?;
            out.push(Record {
                end: start + HEADER + len as u64,
                bytes,
            });
        }
        Ok(out)
    }

    /// Marks everything before `end` as acknowledged (durably). When all is sent and the log is
    /// past the compaction size, runs `before_compact` (which saves what the caller derives from
    /// the records) and, if it succeeded, empties the log.
    pub fn ack(
        &mut self,
        end: u64,
        before_compact: impl FnOnce() -> std::io::Result<()>,
    ) -> Result<(), SpoolError> {
        write_durably(&self.dir.join("cursor"), end.to_string().as_bytes())?;
        while self.pending.front().is_some_and(|s| *s < end) {
            self.pending.pop_front();
        }
        if self.pending.is_empty() && self.len > self.compact_at {
            before_compact()?;
            // Everything is uploaded: start a fresh log, then reset the cursor (a crash in
            // between leaves a cursor beyond the empty log, which opening clamps).
            self.log.set_len(0)?;
            self.log.sync_all()?;
            write_durably(&self.dir.join("cursor"), b"0")?;
            self.len = 0;
        }
        Ok(())
    }

    /// Every record still in the log (sent or not), for rebuilding replay state at start.
    pub fn all(&mut self) -> Result<Vec<Vec<u8>>, SpoolError> {
        let mut data = Vec::new();
        self.log.seek(SeekFrom::Start(0))?;
        self.log.read_to_end(&mut data)?;
        Ok(scan(&data)
            .into_iter()
            .map(|(start, len)| {
                data[start + HEADER as usize..start + HEADER as usize + len].to_vec()
            })
            .collect())
    }
}

/// The valid records of a log image, as (start offset, payload length): every record up to the
/// first one that is truncated, over-long or fails its CRC.
fn scan(data: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + HEADER as usize <= data.len() {
        let len =
            u32::from_le_bytes([data[pos], data[pos + 1], data[pos + 2], data[pos + 3]]) as usize;
        let crc = u32::from_le_bytes([data[pos + 4], data[pos + 5], data[pos + 6], data[pos + 7]]);
        let end = pos + HEADER as usize + len;
        if len > MAX_RECORD
            || end > data.len()
            || crc32fast::hash(&data[pos + HEADER as usize..end]) != crc
        {
            break;
        }
        out.push((pos, len));
        pos = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("spool-test-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn append_reopen_ack() {
        let d = dir("basic");
        let mut s = Spool::open(&d, 100).unwrap();
        s.append(&[b"one".to_vec(), b"two".to_vec()]).unwrap();
        s.append(&[b"three".to_vec()]).unwrap();
        let recs = s.peek(2).unwrap();
        assert_eq!(
            recs.iter().map(|r| r.bytes.clone()).collect::<Vec<_>>(),
            vec![b"one".to_vec(), b"two".to_vec()]
        );
        s.ack(recs[1].end, || Ok(())).unwrap();
        drop(s);
        let mut s = Spool::open(&d, 100).unwrap();
        assert_eq!(s.pending(), 1);
        assert_eq!(s.peek(10).unwrap()[0].bytes, b"three".to_vec());
        assert_eq!(s.all().unwrap().len(), 3);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn compaction_runs_the_hook_first_and_only_when_all_is_sent() {
        let d = dir("compact");
        let mut s = Spool::open(&d, 100).unwrap().compact_at(10);
        s.append(&[b"0123456789".to_vec(), b"abc".to_vec()])
            .unwrap();
        let first = s.peek(1).unwrap()[0].end;
        let mut ran = false;
        s.ack(first, || {
            ran = true;
            Ok(())
        })
        .unwrap();
        assert!(!ran, "a record is still unsent: no compaction");
        let end = s.peek(1).unwrap()[0].end;
        // A failing hook leaves the log as it was.
        assert!(s
            .ack(end, || Err(std::io::Error::other("disk full")))
            .is_err());
        assert_eq!(s.all().unwrap().len(), 2);
        s.ack(end, || {
            ran = true;
            Ok(())
        })
        .unwrap();
        assert!(ran && s.is_empty());
        drop(s);
        let mut s = Spool::open(&d, 100).unwrap();
        assert_eq!((s.pending(), s.all().unwrap().len()), (0, 0));
        s.append(&[b"next".to_vec()]).unwrap();
        assert_eq!(s.peek(5).unwrap()[0].bytes, b"next".to_vec());
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_is_cut_and_bounds_hold() {
        let d = dir("torn");
        let mut s = Spool::open(&d, 3).unwrap();
        s.append(&[b"a".to_vec(), b"b".to_vec()]).unwrap();
        drop(s);
        // A crash mid-append: half a record at the end.
        let mut f = OpenOptions::new()
            .append(true)
            .open(d.join("spool.log"))
            .unwrap();
        f.write_all(&[50, 0, 0, 0, 1, 2, 3]).unwrap();
        let mut s = Spool::open(&d, 3).unwrap();
        assert_eq!(s.pending(), 2);
        s.append(&[b"c".to_vec()]).unwrap();
        assert!(matches!(
            s.append(&[b"d".to_vec()]),
            Err(SpoolError::Full(3))
        ));
        let all: Vec<Vec<u8>> = s.peek(10).unwrap().into_iter().map(|r| r.bytes).collect();
        assert_eq!(all, vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]);
        let _ = fs::remove_dir_all(&d);
    }
}
