//! The field encoding inside a record's payload: LEB128 integers and
//! length-prefixed byte strings, written straight into the segment's
//! buffer (no intermediate allocation on the request path) and read back
//! with every length checked against the payload.
//!
//! Hand-written rather than a serde format: a record is a handful of
//! fields, most of them byte strings already in the request, and the
//! writer must append them in place behind a frame header.

/// Appends fields to a payload.
pub struct Enc<'a>(pub &'a mut Vec<u8>);

impl Enc<'_> {
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }

    pub fn u64(&mut self, mut v: u64) -> &mut Self {
        while v >= 0x80 {
            self.0.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.0.push(v as u8);
        self
    }

    pub fn bytes(&mut self, v: &[u8]) -> &mut Self {
        self.u64(v.len() as u64);
        self.0.extend_from_slice(v);
        self
    }

    pub fn opt_bytes(&mut self, v: Option<&[u8]>) -> &mut Self {
        match v {
            None => self.u8(0),
            Some(b) => self.u8(1).bytes(b),
        }
    }
}

/// A payload that ended early or held an impossible value; `at` is the
/// offset in the payload.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed {
    pub at: usize,
    pub what: &'static str,
}

/// Reads fields back, in the order they were written.
pub struct Dec<'a> {
    data: &'a [u8],
    at: usize,
}

impl<'a> Dec<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Dec { data, at: 0 }
    }

    pub fn err(&self, what: &'static str) -> Malformed {
        Malformed { at: self.at, what }
    }

    pub fn u8(&mut self) -> Result<u8, Malformed> {
        let v = *self.data.get(self.at).ok_or_else(|| self.err("a byte past the end"))?;
        self.at += 1;
        Ok(v)
    }

    pub fn u64(&mut self) -> Result<u64, Malformed> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                if shift == 63 && b > 1 {
                    return Err(self.err("an integer over 64 bits"));
                }
                return Ok(v);
            }
        }
        Err(self.err("an integer over 64 bits"))
    }

    pub fn u32(&mut self) -> Result<u32, Malformed> {
        u32::try_from(self.u64()?).map_err(|_| self.err("an integer over 32 bits"))
    }

    pub fn u16(&mut self) -> Result<u16, Malformed> {
        u16::try_from(self.u64()?).map_err(|_| self.err("an integer over 16 bits"))
    }

    pub fn bytes(&mut self) -> Result<&'a [u8], Malformed> {
        let n = self.u64()?;
        let end =
            usize::try_from(n).ok().and_then(|n| self.at.checked_add(n)).filter(|e| *e <= self.data.len()).ok_or_else(|| self.err("a string past the end"))?;
        let v = &self.data[self.at..end];
        self.at = end;
        Ok(v)
    }

    pub fn opt_bytes(&mut self) -> Result<Option<&'a [u8]>, Malformed> {
        match self.u8()? {
            0 => Ok(None),
            1 => self.bytes().map(Some),
            _ => Err(self.err("an option tag other than 0 or 1")),
        }
    }

    pub fn bool(&mut self) -> Result<bool, Malformed> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            _ => Err(self.err("a boolean other than 0 or 1")),
        }
    }

    /// Everything was read: a record with bytes left over is not one
    /// this build wrote.
    pub fn finish(&self) -> Result<(), Malformed> {
        if self.at == self.data.len() { Ok(()) } else { Err(self.err("bytes after the last field")) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_round_trip() {
        let mut buf = Vec::new();
        let ints = [0, 1, 127, 128, 300, u32::MAX as u64, u64::MAX];
        let mut e = Enc(&mut buf);
        for v in ints {
            e.u64(v);
        }
        e.bytes(b"").bytes(b"sip:alice@example.com").opt_bytes(None).opt_bytes(Some(b"x")).u8(1);
        let mut d = Dec::new(&buf);
        for v in ints {
            assert_eq!(d.u64(), Ok(v));
        }
        assert_eq!(d.bytes(), Ok(&b""[..]));
        assert_eq!(d.bytes(), Ok(&b"sip:alice@example.com"[..]));
        assert_eq!(d.opt_bytes(), Ok(None));
        assert_eq!(d.opt_bytes(), Ok(Some(&b"x"[..])));
        assert_eq!(d.bool(), Ok(true));
        assert_eq!(d.finish(), Ok(()));
    }

    #[test]
    fn truncation_and_overlong_values_are_errors() {
        let mut buf = Vec::new();
        Enc(&mut buf).bytes(b"hello");
        for n in 0..buf.len() {
            assert!(Dec::new(&buf[..n]).bytes().is_err(), "cut at {n}");
        }
        assert!(Dec::new(&[0xff; 11]).u64().is_err());
        assert!(Dec::new(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]).u64().is_err());
        assert!(Dec::new(&[0x80, 0x80, 0x04]).u16().is_err());
        // A huge length claims more than the payload holds.
        let mut buf = Vec::new();
        Enc(&mut buf).u64(u64::MAX);
        assert!(Dec::new(&buf).bytes().is_err());
        assert!(Dec::new(&[2]).bool().is_err());
        let d = Dec::new(&[1]);
        assert!(d.finish().is_err());
    }
}
