//! The journal's I/O: reading every generation back when the server
//! starts, and each shard's writer task, which performs its journal's
//! flushes with O_DIRECT writes and `fdatasync` through io_uring
//! (glommio's DMA files) on the shard's own thread.
//!
//! Layout: `DIR/gen-G/shard-I-SSSSSS.journal` (segment S of shard I). Each start reads every generation
//! (oldest first), routes the records to the shards of the new layout,
//! and starts generation G+1, whose files open with a checkpoint: every
//! key's state. Once every shard's checkpoint is durable, the older
//! generations are removed. A crash before that leaves them in place, and
//! the next start reads them all again; a key's last record still wins.

use super::LastShard;
use crate::storage::journal::{Fsync, Journal};
use crate::storage::replay::{Counts, Replay};
use crate::storage::segment::{SegmentHeader, SegmentWriter};
use glommio::io::DmaFile;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

/// What a start read from the data directory.
pub struct Loaded {
    /// The generation this run writes.
    pub generation: u64,
    /// Records for each shard, framed (`storage::replay::records`), in
    /// chunks to read in order (one per file read).
    pub per_shard: Vec<Vec<Chunk>>,
    pub counts: Vec<Counts>,
    pub records: u64,
    pub files: usize,
    pub bytes: u64,
}

fn generations(dir: &Path) -> Result<Vec<(u64, PathBuf)>, String> {
    let mut gens = Vec::new();
    let entries = std::fs::read_dir(dir).map_err(|e| format!("cannot read the data directory {}: {e}", dir.display()))?;
    for e in entries {
        let e = e.map_err(|e| format!("{}: {e}", dir.display()))?;
        let name = e.file_name();
        let Some(n) = name.to_str().and_then(|n| n.strip_prefix("gen-")).and_then(|n| n.parse::<u64>().ok()) else { continue };
        gens.push((n, e.path()));
    }
    gens.sort();
    Ok(gens)
}

/// Every segment file under `dir`, in the order a start reads them:
/// oldest generation first.
pub fn segments(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut all = Vec::new();
    for (_, path) in generations(dir)? {
        let mut segments: Vec<PathBuf> = std::fs::read_dir(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "journal"))
            .collect();
        segments.sort();
        all.extend(segments);
    }
    Ok(all)
}

/// Reads every generation under `dir` (created if missing) for a server
/// of `shards` shards, and makes the directory of the next generation.
pub fn load(dir: &Path, shards: u16) -> Result<(Loaded, Checkpoints), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create the data directory {}: {e}", dir.display()))?;
    let gens = generations(dir)?;
    let segments = segments(dir)?;
    let read = read_segments(&segments, shards)?;
    let mut per_shard: Vec<Vec<Chunk>> = (0..shards).map(|_| Vec::new()).collect();
    let mut counts = vec![Counts::default(); shards as usize];
    let (files, mut bytes, mut records) = (read.len(), 0, 0);
    for FileRead { len, replay: r, in_place } in read {
        bytes += len;
        records += r.records;
        for cut in &r.cut {
            tracing::warn!("journal {cut}");
        }
        if let Some((k, chunk)) = in_place {
            per_shard[k as usize].push(chunk);
        }
        for (k, (frames, c)) in r.per_shard.into_iter().zip(r.counts).enumerate() {
            counts[k].presentities += c.presentities;
            counts[k].subscriptions += c.subscriptions;
            if !frames.is_empty() {
                per_shard[k].push(Chunk::Copied(frames));
            }
        }
    }
    let generation = gens.last().map_or(1, |(g, _)| g + 1);
    let next = dir.join(format!("gen-{generation}"));
    std::fs::create_dir_all(&next).map_err(|e| format!("cannot create {}: {e}", next.display()))?;
    let checkpoints = Checkpoints { all: LastShard::new(shards as usize), older: Mutex::new(gens.into_iter().map(|(_, p)| p).collect()) };
    Ok((Loaded { generation, per_shard, counts, records, files, bytes }, checkpoints))
}

/// A shard's records as read: copied out of files of another layout, or
/// a file of the same layout mapped, with where its frames lie.
pub enum Chunk {
    Copied(Vec<u8>),
    Mapped(memmap2::Mmap, Range<usize>),
}

impl std::ops::Deref for Chunk {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Chunk::Copied(v) => v,
            Chunk::Mapped(map, range) => &map[range.clone()],
        }
    }
}

/// One file read: its size and its records, copied into the new layout
/// or, when they all belong to the shard that wrote them, the file
/// itself for that shard.
struct FileRead {
    len: u64,
    replay: Replay,
    in_place: Option<(u16, Chunk)>,
}

/// Maps `path` for reading. A journal file is never written again once
/// a start reads it (each start writes a new generation), so the map
/// stays what was read.
fn map(path: &Path) -> Result<Option<memmap2::Mmap>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if file.metadata().map_err(|e| format!("cannot read {}: {e}", path.display()))?.len() == 0 {
        return Ok(None);
    }
    // SAFETY: the file is not changed while mapped (above); read-only
    // pages, populated up front and read once in order.
    let map = unsafe { memmap2::MmapOptions::new().populate().map(&file) }.map_err(|e| format!("cannot map {}: {e}", path.display()))?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(Some(map))
}

fn read_file(path: &Path, shards: u16) -> Result<FileRead, String> {
    let name = path.display().to_string();
    let mut replay = Replay::new(shards);
    let Some(map) = map(path)? else {
        replay.add_segment(&name, &[]).map_err(|d| d.0)?;
        return Ok(FileRead { len: 0, replay, in_place: None });
    };
    let in_place = replay.add_segment_in_place(&name, &map).map_err(|d| d.0)?;
    Ok(FileRead { len: map.len() as u64, replay, in_place: in_place.map(|(k, range)| (k, Chunk::Mapped(map, range))) })
}

/// Reads and checks `segments` on every core at once, each file on its
/// own into the new layout; returns each file's size and records in the
/// order given (a key's records must be put back in the order written,
/// and a file holds a key's records in that order). The first damaged
/// file, in that order, is the error.
fn read_segments(segments: &[PathBuf], shards: u16) -> Result<Vec<FileRead>, String> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).min(segments.len()).max(1);
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<FileRead, String>>>> = Mutex::new((0..segments.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(seg) = segments.get(i) else { break };
                    let result = read_file(seg, shards);
                    results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                }
            });
        }
    });
    results.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().map(|r| r.expect("every file was read")).collect()
}

/// The path of shard `shard`'s segment `segment` in generation
/// `generation` (numbered so that a sort by name reads each shard's
/// segments in order).
pub fn segment_path(dir: &Path, generation: u64, shard: u16, segment: u32) -> PathBuf {
    dir.join(format!("gen-{generation}")).join(format!("shard-{shard}-{segment:06}.journal"))
}

/// The older generations, removed once every shard's checkpoint in the
/// new one is durable.
pub struct Checkpoints {
    all: LastShard,
    older: Mutex<Vec<PathBuf>>,
}

impl Checkpoints {
    /// A shard's checkpoint is durable; the last one removes the older
    /// generations (a few directory operations, once per start).
    pub fn done(&self) {
        if !self.all.arrive() {
            return;
        }
        for old in std::mem::take(&mut *self.older.lock().unwrap_or_else(|e| e.into_inner())) {
            remove_in_background(old, "older journal generation");
        }
    }
}

/// Removes a journal file or directory on a thread of its own: unlinking
/// a file of hundreds of megabytes takes the file system tens to hundreds
/// of milliseconds, which the shard's thread would not serve meanwhile.
pub fn remove_in_background(path: PathBuf, what: &'static str) {
    let remove = move || {
        let done = if path.is_dir() { std::fs::remove_dir_all(&path) } else { std::fs::remove_file(&path) };
        match done {
            Ok(()) => tracing::info!(path = %path.display(), "{what} removed"),
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot remove an {what}"),
        }
    };
    if let Err(e) = std::thread::Builder::new().name("journal-remove".into()).spawn(remove) {
        tracing::warn!(error = %e, "cannot start a thread to remove an {what}");
    }
}

/// A shard's first segment of a new generation.
pub async fn open(path: &Path, shard: u16, shards: u16, fsync: Fsync, max_pending: usize, created_unix_ms: u64) -> Result<(Journal, DmaFile), String> {
    let file = DmaFile::create(path).await.map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let seg = SegmentWriter::new(SegmentHeader { shard, shards, segment: 1, base_lsn: 0, created_unix_ms });
    Ok((Journal::new(seg, fsync, max_pending), file))
}
