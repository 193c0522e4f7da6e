//! A journal segment file: a 64-byte header, then frames (see `frame`).
//!
//! The header says whose journal this is and where in the shard's stream
//! of changes it starts, so that a file from another shard, another
//! layout or another program is refused by name instead of replayed.

use super::frame;

/// The unit of every write: O_DIRECT needs offsets and lengths aligned to
/// the device's logical block, and 4 KiB covers every device in use.
pub const BLOCK: usize = 4096;
/// Bytes before the first frame.
pub const HEADER_LEN: usize = 64;
const MAGIC: &[u8; 8] = b"PRSDJRNL";
/// Bumped whenever frames or records change incompatibly.
pub const FORMAT: u32 = 1;

const _: () = assert!(HEADER_LEN % frame::ALIGN == 0 && HEADER_LEN < BLOCK);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The shard that wrote it, and how many shards there were: records
    /// are re-partitioned when a restart has another count.
    pub shard: u16,
    pub shards: u16,
    /// The segment's number among the shard's segments of its generation
    /// (from 1; also in its file name).
    pub segment: u32,
    /// The stream position (LSN) of the segment's first frame.
    pub base_lsn: u64,
    pub created_unix_ms: u64,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..8].copy_from_slice(MAGIC);
        h[8..12].copy_from_slice(&FORMAT.to_le_bytes());
        h[12..14].copy_from_slice(&self.shard.to_le_bytes());
        h[14..16].copy_from_slice(&self.shards.to_le_bytes());
        h[16..24].copy_from_slice(&self.base_lsn.to_le_bytes());
        h[24..32].copy_from_slice(&self.created_unix_ms.to_le_bytes());
        h[32..36].copy_from_slice(&self.segment.to_le_bytes());
        let crc = crc32c::crc32c(&h[..HEADER_LEN - 4]);
        h[HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        h
    }

    pub fn decode(data: &[u8]) -> Result<SegmentHeader, String> {
        let h = data.get(..HEADER_LEN).ok_or_else(|| format!("{} bytes, shorter than a journal header", data.len()))?;
        if &h[0..8] != MAGIC {
            return Err("not a presenced journal (bad magic at offset 0)".into());
        }
        let crc = u32::from_le_bytes(h[HEADER_LEN - 4..].try_into().unwrap());
        if crc32c::crc32c(&h[..HEADER_LEN - 4]) != crc {
            return Err("journal header checksum mismatch at offset 0".into());
        }
        let format = u32::from_le_bytes(h[8..12].try_into().unwrap());
        if format != FORMAT {
            return Err(format!("journal format {format}, this build reads {FORMAT}"));
        }
        let u16_at = |i: usize| u16::from_le_bytes([h[i], h[i + 1]]);
        let u64_at = |i: usize| u64::from_le_bytes(h[i..i + 8].try_into().unwrap());
        let segment = u32::from_le_bytes(h[32..36].try_into().unwrap());
        let header = SegmentHeader { shard: u16_at(12), shards: u16_at(14), segment, base_lsn: u64_at(16), created_unix_ms: u64_at(24) };
        if header.shards == 0 || header.shard >= header.shards {
            return Err(format!("journal header names shard {} of {}", header.shard, header.shards));
        }
        Ok(header)
    }
}

/// One write to make: `len` bytes of [`SegmentWriter::pending`] at file
/// offset `offset` (a multiple of [`BLOCK`]), zero-padded by the driver to
/// `padded_len`. Once it is on the file, the stream up to `upto` is there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Write {
    pub offset: u64,
    pub len: usize,
    pub padded_len: usize,
    pub upto: u64,
}

/// The file image a segment's writer has not finished with: the last
/// partial block (already on the file, written again with whatever
/// follows it) and everything appended since. Writes are always whole
/// blocks from a block boundary, so the driver needs no read-modify-write.
pub struct SegmentWriter {
    header: SegmentHeader,
    pending: Vec<u8>,
    /// File offset of `pending[0]`.
    block_start: u64,
    /// Frames appended but not yet in a write handed out.
    unsubmitted: bool,
}

impl SegmentWriter {
    pub fn new(header: SegmentHeader) -> Self {
        let mut pending = Vec::with_capacity(BLOCK);
        pending.extend_from_slice(&header.encode());
        SegmentWriter { header, pending, block_start: 0, unsubmitted: true }
    }

    /// Continues an existing segment whose good data ends at file offset
    /// `end` (from a scan), `tail` being the file's bytes from the start
    /// of `end`'s block up to `end`.
    pub fn resume(header: SegmentHeader, end: u64, tail: &[u8]) -> Self {
        let block_start = end - end % BLOCK as u64;
        assert_eq!(tail.len() as u64, end - block_start, "the tail is the partial block before the end");
        let mut pending = Vec::with_capacity(BLOCK);
        pending.extend_from_slice(tail);
        // The bytes after `end` on the file (a torn frame) are overwritten
        // by zeros on the next write.
        SegmentWriter { header, pending, block_start, unsubmitted: true }
    }

    pub fn header(&self) -> &SegmentHeader {
        &self.header
    }

    /// The stream position after the last appended frame.
    pub fn lsn(&self) -> u64 {
        self.header.base_lsn + self.block_start + self.pending.len() as u64 - HEADER_LEN as u64
    }

    /// The file offset after the last appended frame.
    pub fn file_len(&self) -> u64 {
        self.block_start + self.pending.len() as u64
    }

    /// Appends one frame whose payload `write` produces; returns the LSN
    /// after it.
    pub fn append(&mut self, write: impl FnOnce(&mut Vec<u8>)) -> u64 {
        frame::push_with(&mut self.pending, write);
        self.unsubmitted = true;
        self.lsn()
    }

    /// Bytes appended and not yet handed out in a write.
    pub fn has_unsubmitted(&self) -> bool {
        self.unsubmitted
    }

    /// Bytes held in memory: the partial block and the unwritten frames.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The next write: everything from the partial block on.
    pub fn next_write(&mut self) -> Option<Write> {
        if !self.unsubmitted {
            return None;
        }
        self.unsubmitted = false;
        let len = self.pending.len();
        Some(Write { offset: self.block_start, len, padded_len: len.next_multiple_of(BLOCK), upto: self.lsn() })
    }

    /// Everything from the partial block on again (after a failed write).
    pub fn rewrite(&mut self) -> Write {
        self.unsubmitted = true;
        self.next_write().expect("marked unsubmitted")
    }

    /// The bytes of write `w`.
    pub fn bytes(&self, w: &Write) -> &[u8] {
        debug_assert_eq!(w.offset, self.block_start, "one write in flight at a time");
        &self.pending[..w.len]
    }

    /// Write `w` reached the file: whole blocks it covered are done with.
    pub fn written(&mut self, w: &Write) {
        assert_eq!(w.offset, self.block_start, "writes complete in order");
        let done = w.len - w.len % BLOCK;
        self.pending.drain(..done);
        self.block_start += done as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SegmentHeader {
        SegmentHeader { shard: 1, shards: 2, segment: 3, base_lsn: 1000, created_unix_ms: 1_800_000_000_000 }
    }

    #[test]
    fn the_header_round_trips_and_refuses_what_is_not_ours() {
        let h = header();
        assert_eq!(SegmentHeader::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(SegmentHeader::decode(&bad).unwrap_err().contains("not a presenced journal"));
        let mut bad = h.encode();
        bad[20] ^= 1;
        assert!(SegmentHeader::decode(&bad).unwrap_err().contains("checksum"));
        assert!(SegmentHeader::decode(&[0; 10]).unwrap_err().contains("shorter"));
        let wrong = SegmentHeader { shard: 2, ..h };
        assert!(SegmentHeader::decode(&wrong.encode()).unwrap_err().contains("shard 2 of 2"));
    }

    /// Applies writes to an in-memory file the way the driver does.
    fn apply(file: &mut Vec<u8>, w: &SegmentWriter, write: &Write) {
        let end = write.offset as usize + write.padded_len;
        if file.len() < end {
            file.resize(end, 0);
        }
        let at = write.offset as usize;
        file[at..at + write.len].copy_from_slice(w.bytes(write));
        file[at + write.len..end].fill(0);
    }

    fn frames_of(file: &[u8]) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let ending = frame::scan(file, HEADER_LEN, |_, p| {
            got.push(p.to_vec());
            Ok::<_, frame::Corrupt>(())
        })
        .unwrap();
        assert!(matches!(ending, frame::Ending::Clean { .. }));
        got
    }

    #[test]
    fn writes_rewrite_the_partial_block_and_keep_memory_to_it() {
        let mut w = SegmentWriter::new(header());
        let mut file = Vec::new();
        let mut expect = Vec::new();
        for i in 0..500u32 {
            let payload = format!("record {i} {}", "x".repeat((i % 97) as usize));
            let lsn = w.append(|out| out.extend_from_slice(payload.as_bytes()));
            expect.push(payload.into_bytes());
            assert_eq!(lsn, 1000 + w.file_len() - HEADER_LEN as u64);
            // A write after every few appends, sometimes with appends
            // made while it was in flight.
            if i % 7 == 0 {
                let write = w.next_write().unwrap();
                assert_eq!(write.offset % BLOCK as u64, 0);
                assert_eq!(write.padded_len % BLOCK, 0);
                apply(&mut file, &w, &write);
                w.append(|out| out.extend_from_slice(b"while in flight"));
                expect.push(b"while in flight".to_vec());
                w.written(&write);
                assert!(w.pending_len() < BLOCK + 300, "only the partial block and the new frame stay");
            }
        }
        let write = w.next_write().unwrap();
        apply(&mut file, &w, &write);
        w.written(&write);
        assert!(w.next_write().is_none());
        assert_eq!(SegmentHeader::decode(&file), Ok(header()));
        assert_eq!(frames_of(&file), expect);
    }

    #[test]
    fn a_resumed_segment_continues_after_its_good_data() {
        let mut w = SegmentWriter::new(header());
        let mut file = Vec::new();
        for i in 0..100 {
            w.append(|out| out.extend_from_slice(format!("first life {i}").as_bytes()));
        }
        let write = w.next_write().unwrap();
        apply(&mut file, &w, &write);
        let end = w.file_len();
        // A torn frame after the good data.
        file[end as usize..end as usize + 12].copy_from_slice(&[40, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        let block = (end - end % BLOCK as u64) as usize;
        let mut w = SegmentWriter::resume(header(), end, &file[block..end as usize]);
        assert_eq!(w.file_len(), end);
        w.append(|out| out.extend_from_slice(b"second life"));
        let write = w.next_write().unwrap();
        apply(&mut file, &w, &write);
        let got = frames_of(&file);
        assert_eq!(got.len(), 101);
        assert_eq!(got.last().unwrap(), b"second life");
    }
}
