//! Finding one byte value in a SIP head with SSE2 compares.
//!
//! The head splitter looks for the next LF and the next `:` once per header
//! line. A `memchr` call per line pays its setup (alignment, dispatch) for a
//! line of 20 to 80 bytes, which made it the largest single cost of a split.
//! A [`ByteScanner`] instead keeps a 64-bit mask of the matches in one
//! 64-byte block and answers each query with a shift and a trailing-zero
//! count; a new block is compared only when a query passes the cached one.
//! The `:` ends a header name a few bytes into its line, so [`find_near`]
//! answers it from one 16-byte compare at the line start.

/// Finds occurrences of one byte value. Queries are cheapest when their
/// start positions never decrease (each block is then compared once), but
/// any order gives the right answer.
pub struct ByteScanner<'a> {
    buf: &'a [u8],
    needle: u8,
    /// Start of the block `mask` describes; `usize::MAX` before the first query.
    base: usize,
    /// Bit `i` set if `buf[base + i] == needle`.
    mask: u64,
}

impl<'a> ByteScanner<'a> {
    pub fn new(buf: &'a [u8], needle: u8) -> Self {
        ByteScanner { buf, needle, base: usize::MAX, mask: 0 }
    }

    /// Index of the first `needle` at or after `from`.
    #[inline]
    pub fn find_from(&mut self, from: usize) -> Option<usize> {
        let mut block = from & !63;
        let mut shift = from & 63;
        loop {
            if block >= self.buf.len() {
                return None;
            }
            if block != self.base {
                self.mask = block_mask(self.buf, block, self.needle);
                self.base = block;
            }
            let m = self.mask >> shift;
            if m != 0 {
                return Some(block + shift + m.trailing_zeros() as usize);
            }
            block += 64;
            shift = 0;
        }
    }
}

/// Index of the first `needle` in `buf[from..end]`, for a needle that is
/// usually a few bytes in (the `:` after a header name): one 16-byte
/// compare answers that case, and only a longer search calls memchr.
#[inline(always)]
pub fn find_near(buf: &[u8], from: usize, end: usize, needle: u8) -> Option<usize> {
    debug_assert!(from <= end && end <= buf.len());
    if let Some(window) = buf.get(from..from + 16) {
        let m = mask16(window.try_into().expect("16 bytes"), needle);
        if m != 0 {
            let at = from + m.trailing_zeros() as usize;
            return (at < end).then_some(at);
        }
        if end <= from + 16 {
            return None;
        }
        return memchr::memchr(needle, &buf[from + 16..end]).map(|p| p + from + 16);
    }
    memchr::memchr(needle, &buf[from..end]).map(|p| p + from)
}

/// Mask of `needle` in the 64 bytes at `at` (fewer at the end of `buf`:
/// bits past the end stay clear).
#[inline(always)]
fn block_mask(buf: &[u8], at: usize, needle: u8) -> u64 {
    match buf.get(at..at + 64) {
        Some(block) => mask64(block.try_into().expect("64 bytes"), needle),
        None => tail_mask(buf, at, needle),
    }
}

/// The last, partial block. Once per scanner per message, so kept out of
/// line: inlined, it made `find_from` too large to inline in the splitter.
#[inline(never)]
fn tail_mask(buf: &[u8], at: usize, needle: u8) -> u64 {
    let tail = &buf[at..];
    if buf.len() >= 64 {
        // The 64 bytes that end the buffer, shifted to drop those before
        // `at`: no copy of the tail into a padded block.
        let last: &[u8; 64] = buf[buf.len() - 64..].try_into().expect("64 bytes");
        return mask64(last, needle) >> (64 - tail.len());
    }
    let mut padded = [0u8; 64];
    padded[..tail.len()].copy_from_slice(tail);
    // tail.len() < 64, so the shift is in range.
    mask64(&padded, needle) & ((1u64 << tail.len()) - 1)
}

#[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
#[inline(always)]
fn mask16(block: &[u8; 16], needle: u8) -> u32 {
    use std::arch::x86_64::{__m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8};
    // SAFETY: SSE2 is enabled for this target; one unaligned 16-byte load
    // of a 16-byte array.
    unsafe { _mm_movemask_epi8(_mm_cmpeq_epi8(_mm_loadu_si128(block.as_ptr() as *const __m128i), _mm_set1_epi8(needle as i8))) as u32 }
}

#[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
#[inline]
fn mask16(block: &[u8; 16], needle: u8) -> u32 {
    block.iter().enumerate().fold(0u32, |m, (i, &b)| m | ((b == needle) as u32) << i)
}

/// Mask of `needle` in a 64-byte block: four 16-byte compares.
#[inline(always)]
fn mask64(block: &[u8; 64], needle: u8) -> u64 {
    let m = |i: usize| mask16(block[16 * i..16 * i + 16].try_into().expect("16 bytes"), needle) as u64;
    m(0) | m(1) << 16 | m(2) << 32 | m(3) << 48
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every query against a plain scan, on lengths around block edges and
    /// with queries in increasing and in arbitrary order.
    #[test]
    fn agrees_with_a_plain_scan() {
        for len in [0usize, 1, 63, 64, 65, 127, 128, 129, 300] {
            let buf: Vec<u8> = (0..len).map(|i| if i % 7 == 3 || i % 61 == 0 { b'\n' } else { b'a' }).collect();
            let expect = |from: usize| buf.get(from..).and_then(|s| s.iter().position(|&b| b == b'\n')).map(|p| p + from);
            let mut s = ByteScanner::new(&buf, b'\n');
            for from in 0..len + 70 {
                assert_eq!(s.find_from(from), expect(from), "len {len} from {from}");
            }
            let mut s = ByteScanner::new(&buf, b'\n');
            for from in (0..len + 70).rev().step_by(5) {
                assert_eq!(s.find_from(from), expect(from), "len {len} from {from} (backwards)");
            }
        }
    }

    /// Every window of every short buffer, needles before, inside and
    /// past the 16-byte compare and past `end`.
    #[test]
    fn find_near_agrees_with_a_plain_scan() {
        for len in [0usize, 1, 15, 16, 17, 40] {
            for colon_at in [None, Some(0), Some(3), Some(15), Some(16), Some(30)] {
                let mut buf = vec![b'a'; len];
                if let Some(c) = colon_at.filter(|&c| c < len) {
                    buf[c] = b':';
                }
                for from in 0..=len {
                    for end in from..=len {
                        let expect = buf[from..end].iter().position(|&b| b == b':').map(|p| p + from);
                        assert_eq!(find_near(&buf, from, end, b':'), expect, "len {len} colon {colon_at:?} {from}..{end}");
                    }
                }
            }
        }
    }

    #[test]
    fn absent_needle_and_needle_zero() {
        let buf = [b'x'; 100];
        assert_eq!(ByteScanner::new(&buf, b':').find_from(0), None);
        // Padding bytes of the last block are zero and must not match.
        let buf = [1u8; 70];
        assert_eq!(ByteScanner::new(&buf, 0).find_from(0), None);
    }
}
