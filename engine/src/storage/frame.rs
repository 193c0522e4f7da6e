//! Record framing in a journal segment: each record is
//!
//! ```text
//! len: u32 LE | crc: u32 LE | payload (len bytes) | zeros to the next 8-byte boundary
//! ```
//!
//! where `crc` is CRC-32C over the four length bytes and the payload, so a
//! flipped length is caught as surely as a flipped payload byte. A frame
//! header of eight zero bytes marks the end of the data: the segment's
//! last block is written whole, padded with zeros.
//!
//! Reading tells two failures apart. A bad frame with no good frame after
//! it is a torn tail (a crash in the middle of a write): it is cut, and
//! the records before it stand. A bad frame followed by a good one is
//! corruption inside acknowledged data: an error naming the offset, never
//! a silent cut. The 8-byte alignment keeps the search for a later good
//! frame cheap and its false matches rare (a random 8 bytes pass the CRC
//! one time in 2^32).

/// Bytes before a frame's payload.
pub const HEADER: usize = 8;
/// Frames start on multiples of this.
pub const ALIGN: usize = 8;
/// Longest payload a frame may carry: a limit, so that a corrupt length
/// cannot make the reader look gigabytes ahead.
pub const MAX_PAYLOAD: usize = 1 << 20;

/// Bytes a frame of `payload` bytes takes, padding included.
pub fn framed_len(payload: usize) -> usize {
    (HEADER + payload).next_multiple_of(ALIGN)
}

fn checksum(len: [u8; 4], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&len), payload)
}

/// Appends one frame holding `payload` to `out`.
pub fn push(out: &mut Vec<u8>, payload: &[u8]) {
    assert!(!payload.is_empty() && payload.len() <= MAX_PAYLOAD, "a frame carries 1..={MAX_PAYLOAD} bytes, not {}", payload.len());
    let len = (payload.len() as u32).to_le_bytes();
    let start = out.len();
    out.extend_from_slice(&len);
    out.extend_from_slice(&checksum(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out.resize(start + framed_len(payload.len()), 0);
}

/// Appends one frame whose payload `write` produces in place (no copy):
/// the header is patched once the payload's length is known.
pub fn push_with(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0; HEADER]);
    write(out);
    let n = out.len() - start - HEADER;
    assert!(n > 0 && n <= MAX_PAYLOAD, "a frame carries 1..={MAX_PAYLOAD} bytes, not {n}");
    let len = (n as u32).to_le_bytes();
    let crc = checksum(len, &out[start + HEADER..]);
    out[start..start + 4].copy_from_slice(&len);
    out[start + 4..start + HEADER].copy_from_slice(&crc.to_le_bytes());
    out.resize(start + framed_len(n), 0);
}

/// What a frame at some offset turned out to be.
#[derive(Debug, PartialEq, Eq)]
enum Probe {
    /// A good frame: its payload's range and the offset after it.
    Good {
        payload: std::ops::Range<usize>,
        next: usize,
    },
    /// Eight zero bytes, or fewer than eight bytes left: no more data.
    End,
    Bad(&'static str),
}

fn probe(data: &[u8], at: usize) -> Probe {
    let Some(head) = data.get(at..at + HEADER) else {
        // (`at` may pass the end when the file ends inside a frame's padding.)
        let rest = data.get(at..).unwrap_or_default();
        return if rest.iter().all(|b| *b == 0) { Probe::End } else { Probe::Bad("a partial frame header") };
    };
    if head.iter().all(|b| *b == 0) {
        return Probe::End;
    }
    let len = [head[0], head[1], head[2], head[3]];
    let n = u32::from_le_bytes(len) as usize;
    if n == 0 || n > MAX_PAYLOAD {
        return Probe::Bad("an impossible length");
    }
    let payload = at + HEADER..at + HEADER + n;
    let Some(body) = data.get(payload.clone()) else { return Probe::Bad("a frame longer than the file") };
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if checksum(len, body) != crc {
        return Probe::Bad("a checksum mismatch");
    }
    Probe::Good { payload, next: at + framed_len(n) }
}

/// How reading a segment's frames ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// At the end marker (or the end of the data): nothing was cut.
    Clean { end: usize },
    /// A torn tail at `at`: the frames before it are good; the data from
    /// `at` on is to be cut.
    Torn { at: usize, why: &'static str },
}

/// A bad frame with a good one after it: acknowledged data is damaged.
#[derive(Debug, PartialEq, Eq)]
pub struct Corrupt {
    pub at: usize,
    pub why: &'static str,
    /// Where the next good frame was found.
    pub good_again_at: usize,
}

/// Calls `each(offset, payload)` for every good frame of `data` from
/// `start` (a multiple of [`ALIGN`]), in order, and says how the frames
/// ended. `each` returning an error stops the scan with it.
pub fn scan<E: From<Corrupt>>(data: &[u8], start: usize, mut each: impl FnMut(usize, &[u8]) -> Result<(), E>) -> Result<Ending, E> {
    debug_assert_eq!(start % ALIGN, 0);
    let mut at = start;
    loop {
        match probe(data, at) {
            Probe::Good { payload, next } => {
                each(at, &data[payload])?;
                at = next;
            }
            Probe::End => {
                // Zeros up to the end of the data (the padding of the last
                // block); anything else after an end marker is a frame the
                // marker hides.
                if let Some(good) = next_good(data, at + ALIGN) {
                    return Err(Corrupt { at, why: "an end marker before more frames", good_again_at: good }.into());
                }
                return Ok(Ending::Clean { end: at });
            }
            Probe::Bad(why) => {
                return match next_good(data, at + ALIGN) {
                    Some(good) => Err(Corrupt { at, why, good_again_at: good }.into()),
                    None => Ok(Ending::Torn { at, why }),
                };
            }
        }
    }
}

/// The offset of the first good frame at or after `from`, on the 8-byte
/// grid.
fn next_good(data: &[u8], from: usize) -> Option<usize> {
    (from..data.len().saturating_sub(HEADER - 1)).step_by(ALIGN).find(|at| matches!(probe(data, *at), Probe::Good { .. }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            push(&mut out, p);
        }
        out
    }

    fn read(data: &[u8]) -> Result<(Vec<Vec<u8>>, Ending), Corrupt> {
        let mut got = Vec::new();
        let ending = scan(data, 0, |_, p| {
            got.push(p.to_vec());
            Ok::<_, Corrupt>(())
        })?;
        Ok((got, ending))
    }

    #[test]
    fn frames_round_trip_with_padding_and_an_end_marker() {
        let mut data = frames(&[b"a", b"12345678", b"x".repeat(1000).as_slice()]);
        assert_eq!(data.len(), 16 + 16 + 1008);
        let end = data.len();
        data.resize(4096, 0);
        let (got, ending) = read(&data).unwrap();
        assert_eq!(got, vec![b"a".to_vec(), b"12345678".to_vec(), b"x".repeat(1000)]);
        assert_eq!(ending, Ending::Clean { end });
    }

    #[test]
    fn push_with_equals_push() {
        let mut a = Vec::new();
        push(&mut a, b"hello world");
        let mut b = Vec::new();
        push_with(&mut b, |out| out.extend_from_slice(b"hello world"));
        assert_eq!(a, b);
    }

    #[test]
    fn a_torn_last_frame_is_cut() {
        let good = frames(&[b"first", b"second"]);
        let mut data = good.clone();
        push(&mut data, b"third, torn in the middle of its write");
        // The write stopped halfway through the third frame.
        data.truncate(good.len() + 20);
        let (got, ending) = read(&data).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(ending, Ending::Torn { at: good.len(), why: "a frame longer than the file" });
        // Or it reached the disk with garbage instead of its last bytes.
        let mut data = good.clone();
        push(&mut data, b"third");
        let n = data.len();
        data[n - 4] ^= 0xff;
        data.resize(4096, 0);
        let (got, ending) = read(&data).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(ending, Ending::Torn { at: good.len(), why: "a checksum mismatch" });
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let data = frames(&[b"one", b"two two", b"three three three"]);
        for bit in 0..data.len() * 8 {
            let mut bad = data.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            match read(&bad) {
                // Flips in the padding change nothing anyone reads.
                Ok((got, Ending::Clean { .. })) => {
                    assert_eq!(got.len(), 3, "bit {bit}");
                    assert!(matches!(bit / 8, 11..=15 | 31 | 57..=63), "bit {bit} flipped a read byte unnoticed");
                }
                // In the last frame: a torn tail, the other two stand.
                Ok((got, Ending::Torn { at, .. })) => {
                    assert_eq!(at, 32, "bit {bit}");
                    assert_eq!(got.len(), 2);
                }
                // Before it: corruption, named at the damaged frame.
                Err(c) => {
                    assert!(c.at == 0 || c.at == 16, "bit {bit}: {c:?}");
                    assert!(bit / 8 < 32);
                }
            }
        }
    }

    #[test]
    fn data_after_an_end_marker_is_corruption() {
        let mut data = frames(&[b"one"]);
        let hidden_at = data.len();
        data.extend_from_slice(&[0; 8]);
        push(&mut data, b"two");
        let err = read(&data).unwrap_err();
        assert_eq!((err.at, err.good_again_at), (hidden_at, hidden_at + 8));
    }

    #[test]
    fn a_partial_header_at_the_end_is_torn_and_zeros_are_clean() {
        let mut data = frames(&[b"one"]);
        let end = data.len();
        data.extend_from_slice(&[7, 0, 0]);
        assert_eq!(read(&data).unwrap().1, Ending::Torn { at: end, why: "a partial frame header" });
        data.truncate(end);
        data.extend_from_slice(&[0, 0, 0]);
        assert_eq!(read(&data).unwrap().1, Ending::Clean { end });
    }
}
