//! Ownership and identifiers that carry their owner.
//!
//! Every shard computes the same owner for a presentity: a fixed-seed hash
//! of its normalised AOR modulo the shard count. Identifiers the server
//! mints (dialog to-tags, branches of requests it sends) start with the
//! minting shard's id, so an in-dialog request or a response is routed to
//! its state in O(1) without a shared lookup table.

/// Fixed seeds: the owner of an AOR must not change across restarts or
/// differ between shards.
const SEEDS: [u64; 4] = [0x9e37_79b9_7f4a_7c15, 0xbf58_476d_1ce4_e5b9, 0x94d0_49bb_1331_11eb, 0x2545_f491_4f6c_dd1d];

/// The fixed-seed hash of a normalised AOR: the same in every shard, every
/// node and every run, so shards and cluster partitions can be derived
/// from it.
pub fn aor_hash(aor: &[u8]) -> u64 {
    ahash::RandomState::with_seeds(SEEDS[0], SEEDS[1], SEEDS[2], SEEDS[3]).hash_one(aor)
}

/// The shard that owns the presentity with normalised AOR `aor`.
pub fn owner_of(aor: &[u8], shards: u16) -> u16 {
    (aor_hash(aor) % shards.max(1) as u64) as u16
}

/// RFC 3261 magic cookie followed by our marker.
const BRANCH_PREFIX: &[u8] = b"z9hG4bK.ps";
const TAG_PREFIX: &[u8] = b"ps";

/// Writes a branch for a request that shard `shard` sends:
/// `z9hG4bK.ps<shard hex 4>.<seq hex>`.
pub fn push_branch(out: &mut Vec<u8>, shard: u16, seq: u64) {
    out.extend_from_slice(BRANCH_PREFIX);
    push_hex(out, shard as u64, 4);
    out.push(b'.');
    push_hex(out, seq, 0);
}

/// The shard and sequence number of a branch we minted.
pub fn parse_branch(branch: &[u8]) -> Option<(u16, u64)> {
    let rest = branch.strip_prefix(BRANCH_PREFIX)?;
    let (shard, rest) = (rest.get(..4)?, rest.get(4..)?);
    let seq = rest.strip_prefix(b".")?;
    Some((parse_hex(shard)? as u16, parse_hex(seq)?))
}

/// Writes a to-tag for a dialog that shard `shard` owns:
/// `ps<shard hex 4><unique hex>`.
pub fn push_tag(out: &mut Vec<u8>, shard: u16, unique: u64) {
    out.extend_from_slice(TAG_PREFIX);
    push_hex(out, shard as u64, 4);
    push_hex(out, unique, 0);
}

/// Writes the to-tag of a subscription dialog that shard `shard` owns and
/// whose state lives in cluster partition `partition`:
/// `ps<shard hex 4><partition hex 4>.<unique hex>`. The partition is what
/// any node routes the dialog's in-dialog requests by, and the log its
/// records go to, so that the dialog outlives the node that made it.
pub fn push_dialog_tag(out: &mut Vec<u8>, shard: u16, partition: u16, unique: u64) {
    out.extend_from_slice(TAG_PREFIX);
    push_hex(out, shard as u64, 4);
    push_hex(out, partition as u64, 4);
    out.push(b'.');
    push_hex(out, unique, 0);
}

/// The cluster partition a to-tag names (see [`push_dialog_tag`]), if it
/// names one. A tag of [`push_tag`]'s shape never does: its unique part
/// has no dot.
pub fn tag_partition(tag: &[u8]) -> Option<u16> {
    let rest = tag.strip_prefix(TAG_PREFIX)?.get(4..)?;
    let (partition, unique) = (rest.get(..4)?, rest.get(4..)?);
    if unique.len() < 2 || unique[0] != b'.' || !partition.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    parse_hex(partition).map(|v| v as u16)
}

/// The shard that minted a to-tag, if we minted it.
pub fn tag_shard(tag: &[u8]) -> Option<u16> {
    let rest = tag.strip_prefix(TAG_PREFIX)?;
    if rest.len() <= 4 {
        return None;
    }
    parse_hex(&rest[..4]).map(|v| v as u16)
}

fn push_hex(out: &mut Vec<u8>, v: u64, width: usize) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digits = if v == 0 { 1 } else { (64 - v.leading_zeros() as usize).div_ceil(4) };
    for _ in digits..width {
        out.push(b'0');
    }
    for i in (0..digits).rev() {
        out.push(HEX[((v >> (i * 4)) & 0xf) as usize]);
    }
}

fn parse_hex(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 16 {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = (c as char).to_digit(16)?;
        v = (v << 4) | d as u64;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn branch_round_trip() {
        let mut b = Vec::new();
        push_branch(&mut b, 3, 0xabc123);
        assert_eq!(b, b"z9hG4bK.ps0003.abc123");
        assert_eq!(parse_branch(&b), Some((3, 0xabc123)));
        assert_eq!(parse_branch(b"z9hG4bK776asdhds"), None);
        assert_eq!(parse_branch(b"z9hG4bK.ps00"), None);
    }

    #[test]
    fn tag_round_trip() {
        let mut t = Vec::new();
        push_tag(&mut t, 258, 7);
        assert_eq!(t, b"ps01027");
        assert_eq!(tag_shard(&t), Some(258));
        assert_eq!(tag_shard(b"1928301774"), None);
        assert_eq!(tag_shard(b"ps01"), None);
    }

    #[test]
    fn a_dialog_tag_names_its_shard_and_partition() {
        let mut t = Vec::new();
        push_dialog_tag(&mut t, 3, 0x2a, 0xbeef);
        assert_eq!(t, b"ps0003002a.beef");
        assert_eq!(tag_shard(&t), Some(3));
        assert_eq!(tag_partition(&t), Some(0x2a));
        let mut plain = Vec::new();
        push_tag(&mut plain, 3, 0x1234_5678_9abc);
        assert_eq!(tag_partition(&plain), None, "a plain tag names no partition");
        assert_eq!(tag_partition(b"ps0003002a."), None);
        assert_eq!(tag_partition(b"ps0003xy2a.1"), None);
        assert_eq!(tag_partition(b"1928301774"), None);
    }

    #[test]
    fn owner_is_stable_and_spread() {
        assert_eq!(owner_of(b"sip:alice@example.com", 1), 0);
        let a = owner_of(b"sip:alice@example.com", 4);
        assert_eq!(a, owner_of(b"sip:alice@example.com", 4));
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            counts[owner_of(format!("sip:user{i}@example.com").as_bytes(), 4) as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }
}
