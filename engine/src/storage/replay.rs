//! Reading journals back at a restart: every segment's records, checked,
//! and routed to the shard that owns each presentity in the layout the
//! server starts with, which need not be the layout that wrote them.
//!
//! Segments are added oldest generation first. Records are whole states
//! (`record`), and within one generation a key has records in one file
//! only, so for each key the last record added is its state.

use super::frame::{self, Corrupt, Ending};
use super::record::Record;
use super::segment::{HEADER_LEN, SegmentHeader};
use std::ops::Range;

/// Why a segment cannot be used: it names the file and the offset.
#[derive(Debug, PartialEq, Eq)]
pub struct Damaged(pub String);

impl From<Corrupt> for Damaged {
    fn from(c: Corrupt) -> Self {
        Damaged(format!("offset {}: {}, and a good record follows at offset {}: the journal is damaged", c.at, c.why, c.good_again_at))
    }
}

/// The records of every segment read, as frames per shard.
pub struct Replay {
    shards: u16,
    /// For each shard of the new layout, its records' payloads, framed.
    pub per_shard: Vec<Vec<u8>>,
    /// For each shard, how many of its records are about presentities and
    /// how many about subscriptions: upper bounds on what it restores, to
    /// size its tables once instead of growing them record by record.
    pub counts: Vec<Counts>,
    pub records: u64,
    /// What was cut: each a torn tail, named by file and offset.
    pub cut: Vec<String>,
}

impl Replay {
    pub fn new(shards: u16) -> Self {
        Replay { shards, per_shard: vec![Vec::new(); shards as usize], counts: vec![Counts::default(); shards as usize], records: 0, cut: Vec::new() }
    }

    /// Reads one segment, `name` being how errors name it, copying each
    /// record into its owner's frames.
    pub fn add_segment(&mut self, name: &str, data: &[u8]) -> Result<Option<SegmentHeader>, Damaged> {
        let scanned = scan(name, data, self.shards, Some(&mut self.per_shard))?;
        Ok(self.take(scanned))
    }

    /// Reads one segment like [`Replay::add_segment`], but if every record
    /// in it belongs to the shard that wrote it (the layout did not
    /// change), copies nothing: returns that shard and where its frames
    /// lie in `data`, which can then be handed to the shard as they are.
    pub fn add_segment_in_place(&mut self, name: &str, data: &[u8]) -> Result<Option<(u16, Range<usize>)>, Damaged> {
        if SegmentHeader::decode(data).ok().is_none_or(|h| h.shards != self.shards) {
            return self.add_segment(name, data).map(|_| None);
        }
        let scanned = scan(name, data, self.shards, None)?;
        let range = HEADER_LEN..scanned.end;
        match scanned.header.filter(|h| scanned.owners.all_are(h.shard)) {
            Some(h) => {
                self.take(scanned);
                Ok(Some((h.shard, range)))
            }
            // A record of another shard's (never written by this build):
            // read again, copying each to its owner.
            None => self.add_segment(name, data).map(|_| None),
        }
    }

    /// Adds what a scan counted and cut.
    fn take(&mut self, scanned: Scanned) -> Option<SegmentHeader> {
        for (all, c) in self.counts.iter_mut().zip(scanned.counts) {
            all.presentities += c.presentities;
            all.subscriptions += c.subscriptions;
        }
        self.records += scanned.records;
        self.cut.extend(scanned.cut);
        scanned.header
    }
}

/// What one segment held.
struct Scanned {
    header: Option<SegmentHeader>,
    /// Where its good frames end.
    end: usize,
    owners: Owners,
    counts: Vec<Counts>,
    records: u64,
    /// A torn tail cut, or a file never written.
    cut: Option<String>,
}

/// Checks every frame of `data` and counts its records by their owner
/// among `shards`; copies each into its owner's frames in `copy_into`, if
/// given.
fn scan(name: &str, data: &[u8], shards: u16, mut copy_into: Option<&mut Vec<Vec<u8>>>) -> Result<Scanned, Damaged> {
    let mut scanned = Scanned { header: None, end: 0, owners: Owners::None, counts: vec![Counts::default(); shards as usize], records: 0, cut: None };
    if data.len() < HEADER_LEN && data.iter().all(|b| *b == 0) {
        // Created, and the process died before its first write (which
        // carries the header): nothing was recorded in it.
        scanned.cut = Some(format!("{name}: empty, never written"));
        return Ok(scanned);
    }
    scanned.header = Some(SegmentHeader::decode(data).map_err(|e| Damaged(format!("{name}: {e}")))?);
    let ending = frame::scan(data, HEADER_LEN, |at, payload| {
        let record = Record::decode(payload).map_err(|m| Damaged(format!("offset {}: {} in a record", at + frame::HEADER + m.at, m.what)))?;
        let owner = record.owner(shards);
        scanned.owners = scanned.owners.and(owner);
        let owner = owner as usize;
        if let Some(per_shard) = copy_into.as_deref_mut() {
            if per_shard[owner].is_empty() {
                // As records spread by hash, about an even part of the
                // segment each: room once, rather than doublings that copy
                // what is there.
                per_shard[owner].reserve(data.len() / shards as usize + data.len() / 16);
            }
            frame::push(&mut per_shard[owner], payload);
        }
        match record {
            Record::Registration { .. } | Record::Publications { .. } => scanned.counts[owner].presentities += 1,
            Record::Subscription(_) => scanned.counts[owner].subscriptions += 1,
            Record::SubscriptionEnded { .. } => {}
        }
        scanned.records += 1;
        Ok::<_, Damaged>(())
    })
    .map_err(|Damaged(e)| Damaged(format!("{name}: {e}")))?;
    scanned.end = match ending {
        Ending::Clean { end } => end,
        Ending::Torn { at, why } => {
            scanned.cut = Some(format!("{name}: torn tail at offset {at} ({why}), {} bytes cut", data.len() - at));
            at
        }
    };
    Ok(scanned)
}

/// The shards, in the new layout, that a segment's records belong to.
#[derive(Clone, Copy)]
enum Owners {
    None,
    Only(u16),
    Several,
}

impl Owners {
    /// With one more record, of `owner`'s.
    fn and(self, owner: u16) -> Owners {
        match self {
            Owners::None => Owners::Only(owner),
            Owners::Only(k) if k == owner => self,
            _ => Owners::Several,
        }
    }

    /// Whether every record (if any) is `shard`'s.
    fn all_are(self, shard: u16) -> bool {
        match self {
            Owners::None => true,
            Owners::Only(k) => k == shard,
            Owners::Several => false,
        }
    }
}

/// Records of one shard by what they restore.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub presentities: usize,
    pub subscriptions: usize,
}

/// Calls `each` with every record of `frames` (one shard's part of a
/// [`Replay`]).
pub fn records(frames: &[u8], mut each: impl FnMut(Record<'_>)) {
    let ending = frame::scan(frames, 0, |_, payload| {
        each(Record::decode(payload).expect("checked when read"));
        Ok::<_, Corrupt>(())
    });
    debug_assert!(matches!(ending, Ok(Ending::Clean { .. })));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::ids;
    use crate::storage::segment::SegmentWriter;

    fn segment(shard: u16, shards: u16, records: &[Record<'_>]) -> Vec<u8> {
        let mut w = SegmentWriter::new(SegmentHeader { shard, shards, segment: 1, base_lsn: 0, created_unix_ms: 0 });
        for r in records {
            w.append(|out| r.encode(out));
        }
        let write = w.next_write().unwrap();
        let mut file = w.bytes(&write).to_vec();
        file.resize(write.padded_len, 0);
        file
    }

    fn publications(aor: &'static str) -> Record<'static> {
        Record::Publications { aor: aor.as_bytes(), publications: vec![] }
    }

    fn aors(frames: &[u8]) -> Vec<String> {
        let mut got = Vec::new();
        records(frames, |r| got.push(String::from_utf8(r.key().to_vec()).unwrap()));
        got
    }

    #[test]
    fn records_go_to_their_owner_in_the_new_layout() {
        let names: Vec<String> = (0..40).map(|i| format!("sip:u{i}@example.com")).collect();
        let recs: Vec<Record<'_>> = names.iter().map(|n| Record::Publications { aor: n.as_bytes(), publications: vec![] }).collect();
        // Written by two shards (each its own), read back by one, then
        // by three.
        let (mine, theirs): (Vec<_>, Vec<_>) = recs.iter().cloned().partition(|r| r.owner(2) == 0);
        let files = [segment(0, 2, &mine), segment(1, 2, &theirs)];
        for shards in [1u16, 3] {
            let mut replay = Replay::new(shards);
            for (i, f) in files.iter().enumerate() {
                replay.add_segment(&format!("shard-{i}"), f).unwrap();
            }
            assert_eq!(replay.records, 40);
            let mut all = Vec::new();
            for (s, frames) in replay.per_shard.iter().enumerate() {
                for aor in aors(frames) {
                    assert_eq!(ids::owner_of(aor.as_bytes(), shards), s as u16);
                    all.push(aor);
                }
            }
            all.sort();
            let mut want = names.clone();
            want.sort();
            assert_eq!(all, want);
        }
    }

    #[test]
    fn a_segment_of_the_same_layout_is_handed_over_uncopied() {
        let names: Vec<String> = (0..40).map(|i| format!("sip:u{i}@example.com")).collect();
        let recs: Vec<Record<'_>> = names.iter().map(|n| Record::Publications { aor: n.as_bytes(), publications: vec![] }).collect();
        let (mine, theirs): (Vec<_>, Vec<_>) = recs.iter().cloned().partition(|r| r.owner(2) == 1);
        let file = segment(1, 2, &mine);
        // Read by two shards again: shard 1 gets the file's own frames.
        let mut replay = Replay::new(2);
        let (shard, range) = replay.add_segment_in_place("s", &file).unwrap().expect("in place");
        assert_eq!(shard, 1);
        assert_eq!(aors(&file[range]).len(), mine.len());
        assert!(replay.per_shard.iter().all(|f| f.is_empty()), "nothing copied");
        assert_eq!(replay.counts[1].presentities, mine.len());
        assert_eq!(replay.records, mine.len() as u64);
        // Read by three: copied into the new layout.
        let mut replay = Replay::new(3);
        assert_eq!(replay.add_segment_in_place("s", &file).unwrap(), None);
        assert_eq!(replay.per_shard.iter().map(|f| aors(f).len()).sum::<usize>(), mine.len());
        // A file that says it is shard 1's of 2 but holds shard 0's
        // records too: copied, each to its owner.
        let mut mixed = mine.clone();
        mixed.extend(theirs.iter().cloned());
        let mut replay = Replay::new(2);
        assert_eq!(replay.add_segment_in_place("s", &segment(1, 2, &mixed)).unwrap(), None);
        assert_eq!(aors(&replay.per_shard[0]).len(), theirs.len());
        assert_eq!(aors(&replay.per_shard[1]).len(), mine.len());
    }

    #[test]
    fn damage_is_named_by_file_and_offset_and_a_torn_tail_is_cut() {
        let file = segment(0, 1, &[publications("sip:a@x"), publications("sip:b@x"), publications("sip:c@x")]);
        // A flipped bit in the middle record.
        let mut bad = file.clone();
        bad[HEADER_LEN + 24 + 10] ^= 4;
        let err = Replay::new(1).add_segment("gen-1/shard-0-000001.journal", &bad).unwrap_err();
        assert!(err.0.starts_with("gen-1/shard-0-000001.journal: offset 88: a checksum mismatch"), "{}", err.0);
        // A torn last record: the first two stand.
        let mut torn = file.clone();
        torn[HEADER_LEN + 48 + 12] ^= 4;
        let mut replay = Replay::new(1);
        replay.add_segment("s", &torn).unwrap();
        assert_eq!(replay.records, 2);
        assert!(replay.cut[0].starts_with("s: torn tail at offset 112"), "{:?}", replay.cut);
        // Created and never written: nothing in it, and no error.
        let mut replay = Replay::new(1);
        assert_eq!(replay.add_segment("new", &[]), Ok(None));
        assert_eq!(replay.cut, vec!["new: empty, never written"]);
        // Not a journal at all.
        let err = Replay::new(1).add_segment("notes.txt", b"hello, this is not a journal at all, but it is long enough for a header").unwrap_err();
        assert!(err.0.contains("notes.txt: not a presenced journal"), "{}", err.0);
    }
}
