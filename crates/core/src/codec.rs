//! Bounds-checked little readers and writers for the record codec. No indexing, no panics.

use crate::CoreError;

pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Self { buf }
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], CoreError> {
        let (head, rest) = self.buf.split_at_checked(n).ok_or(CoreError::Truncated)?;
        self.buf = rest;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], CoreError> {
        self.take(N)?.try_into().map_err(|_| CoreError::Truncated)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, CoreError> {
        Ok(u8::from_be_bytes(self.array()?))
    }

    pub(crate) fn u16(&mut self) -> Result<u16, CoreError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    pub(crate) fn u32(&mut self) -> Result<u32, CoreError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64, CoreError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    pub(crate) fn bytes16(&mut self) -> Result<&'a [u8], CoreError> {
        let n = self.u16()?;
        self.take(usize::from(n))
    }

    pub(crate) fn bytes32(&mut self) -> Result<&'a [u8], CoreError> {
        let n = usize::try_from(self.u32()?).map_err(|_| CoreError::Truncated)?;
        self.take(n)
    }

    pub(crate) fn text16(&mut self, what: &'static str) -> Result<&'a str, CoreError> {
        std::str::from_utf8(self.bytes16()?).map_err(|_| CoreError::BadField(what))
    }

    pub(crate) fn finish(self) -> Result<(), CoreError> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(CoreError::BadField("trailing bytes"))
        }
    }
}

pub(crate) fn put_bytes16(
    out: &mut Vec<u8>,
    b: &[u8],
    what: &'static str,
) -> Result<(), CoreError> {
    let n = u16::try_from(b.len()).map_err(|_| CoreError::TooLarge {
        what,
        len: b.len(),
        max: usize::from(u16::MAX),
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}

pub(crate) fn put_bytes32(
    out: &mut Vec<u8>,
    b: &[u8],
    what: &'static str,
) -> Result<(), CoreError> {
    let n = u32::try_from(b.len()).map_err(|_| CoreError::TooLarge {
        what,
        len: b.len(),
        max: u32::MAX as usize,
    })?;
    out.extend_from_slice(&n.to_be_bytes());
    out.extend_from_slice(b);
    Ok(())
}
