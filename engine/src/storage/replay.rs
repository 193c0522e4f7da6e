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
        self.add(name, data, false).map(|a| a.header)
    }

    /// Reads one segment like [`Replay::add_segment`], but if every record
    /// in it belongs to the shard that wrote it (the layout did not
    /// change), copies nothing: returns that shard and where its frames
    /// lie in `data`, which can then be handed to the shard as they are.
    pub fn add_segment_in_place(&mut self, name: &str, data: &[u8]) -> Result<Option<(u16, Range<usize>)>, Damaged> {
        let Some(header) = SegmentHeader::decode(data).ok().filter(|h| h.shards == self.shards && h.shard < h.shards) else {
            return self.add(name, data, false).map(|_| None);
        };
        // Checked and counted apart first: a record of another shard's
        // (never written by this build) sends the segment down the
        // copying path after all.
        let mut trial = Replay::new(self.shards);
        match trial.add(name, data, true)? {
            Added { end: Some(end), owners: Owners::Only(k), .. }
            | Added { end: Some(end), owners: Owners::None, header: Some(SegmentHeader { shard: k, .. }) }
                if k == header.shard =>
            {
                self.records += trial.records;
                self.cut.append(&mut trial.cut);
                let c = trial.counts[k as usize];
                self.counts[k as usize].presentities += c.presentities;
                self.counts[k as usize].subscriptions += c.subscriptions;
                Ok(Some((k, HEADER_LEN..end)))
            }
            _ => self.add(name, data, false).map(|_| None),
        }
    }

    /// Checks every frame of `data`, counts its records by owner and
    /// copies them into `per_shard` unless `count_only`.
    fn add(&mut self, name: &str, data: &[u8], count_only: bool) -> Result<Added, Damaged> {
        if data.len() < HEADER_LEN && data.iter().all(|b| *b == 0) {
            // Created, and the process died before its first write (which
            // carries the header): nothing was recorded in it.
            self.cut.push(format!("{name}: empty, never written"));
            return Ok(Added { header: None, end: None, owners: Owners::None });
        }
        let header = SegmentHeader::decode(data).map_err(|e| Damaged(format!("{name}: {e}")))?;
        let shards = self.shards;
        let per_shard = &mut self.per_shard;
        let counts = &mut self.counts;
        let mut records = 0;
        let mut owners = Owners::None;
        let ending = frame::scan(data, HEADER_LEN, |at, payload| {
            let record = Record::decode(payload).map_err(|m| Damaged(format!("offset {}: {} in a record", at + frame::HEADER + m.at, m.what)))?;
            let owner = record.owner(shards);
            owners = match owners {
                Owners::None => Owners::Only(owner),
                Owners::Only(k) if k == owner => owners,
                _ => Owners::Several,
            };
            let owner = owner as usize;
            if !count_only {
                if per_shard[owner].is_empty() {
                    // As records spread by hash, about an even part of the
                    // segment each: room once, rather than doublings that
                    // copy what is there.
                    per_shard[owner].reserve(data.len() / shards as usize + data.len() / 16);
                }
                frame::push(&mut per_shard[owner], payload);
            }
            match record {
                Record::Registration { .. } | Record::Publications { .. } => counts[owner].presentities += 1,
                Record::Subscription(_) => counts[owner].subscriptions += 1,
                Record::SubscriptionEnded { .. } => {}
            }
            records += 1;
            Ok::<_, Damaged>(())
        })
        .map_err(|Damaged(e)| Damaged(format!("{name}: {e}")))?;
        self.records += records;
        let end = match ending {
            Ending::Clean { end } => end,
            Ending::Torn { at, why } => {
                self.cut.push(format!("{name}: torn tail at offset {at} ({why}), {} bytes cut", data.len() - at));
                at
            }
        };
        Ok(Added { header: Some(header), end: Some(end), owners })
    }
}

/// What one segment held.
struct Added {
    header: Option<SegmentHeader>,
    /// Where its good frames end.
    end: Option<usize>,
    owners: Owners,
}

/// The shards, in the new layout, that a segment's records belong to.
#[derive(Clone, Copy)]
enum Owners {
    None,
    Only(u16),
    Several,
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
