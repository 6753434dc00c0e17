//! Vectored writes of shared payloads: a burst of queued deliveries goes to the socket in one
//! `writev`, each iovec pointing into a shared `Bytes` (no copy per subscriber).

use std::io;

use bytes::Bytes;
use monoio::buf::IoVecBuf;
use monoio::io::AsyncWriteRent;

/// Most payloads written in one `writev` (well under Linux's IOV_MAX of 1024).
pub const IOV_BATCH_MAX: usize = 64;

/// A list of shared payloads and the iovec array that describes their unwritten parts.
#[derive(Default)]
pub struct ByteVecs {
    bufs: Vec<Bytes>,
    iov: Vec<libc::iovec>,
}

// SAFETY: every iovec in `iov` points into the heap data of a `Bytes` held in `bufs` (Bytes
// data never moves while a handle to it is alive), with a length within that buffer. `iov` is
// only rebuilt by `&mut self` methods, which cannot run while the runtime owns the value during
// a write, so the pointer and the count stay valid and unchanged for the whole operation.
unsafe impl IoVecBuf for ByteVecs {
    fn read_iovec_ptr(&self) -> *const libc::iovec {
        self.iov.as_ptr()
    }

    fn read_iovec_len(&self) -> usize {
        self.iov.len()
    }
}

impl ByteVecs {
    /// Add a payload (empty ones are skipped).
    pub fn push(&mut self, b: Bytes) {
        if !b.is_empty() {
            self.bufs.push(b);
        }
    }

    /// Payloads still to write.
    pub fn len(&self) -> usize {
        self.bufs.len()
    }

    /// Nothing left to write.
    pub fn is_empty(&self) -> bool {
        self.bufs.is_empty()
    }

    fn rebuild(&mut self) {
        self.iov.clear();
        for b in &self.bufs {
            self.iov.push(libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            });
        }
        debug_assert_eq!(self.iov.len(), self.bufs.len());
    }

    /// Drop the first `n` written bytes.
    fn advance(&mut self, mut n: usize) {
        let mut done = 0;
        for b in &mut self.bufs {
            if n >= b.len() {
                n -= b.len();
                done += 1;
            } else {
                let rest = b.slice(n..);
                *b = rest;
                break;
            }
        }
        self.bufs.drain(..done);
    }
}

/// `first` and the payloads `next` yields after it, at most [`IOV_BATCH_MAX`] in all, for one
/// `writev`; `Err(first)` when nothing follows it (a plain write does).
pub fn batch_after(
    first: Bytes,
    mut next: impl FnMut() -> Option<Bytes>,
) -> Result<ByteVecs, Bytes> {
    let Some(second) = next() else {
        return Err(first);
    };
    let mut v = ByteVecs::default();
    v.push(first);
    v.push(second);
    while v.len() < IOV_BATCH_MAX {
        let Some(b) = next() else { break };
        v.push(b);
    }
    Ok(v)
}

/// Write every payload, in order, with as few `writev` calls as the socket allows.
pub async fn writev_all<W: AsyncWriteRent>(w: &mut W, mut v: ByteVecs) -> io::Result<()> {
    while !v.is_empty() {
        v.rebuild();
        let (res, back) = w.writev(v).await;
        v = back;
        match res {
            Ok(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "writev wrote 0 bytes",
                ))
            }
            Ok(n) => v.advance(n),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_after_takes_what_follows_up_to_the_batch_limit() {
        let one = batch_after(Bytes::from_static(b"a"), || None);
        assert!(matches!(one, Err(b) if b == "a"), "alone: a plain write");
        let mut left = 2;
        let two = batch_after(Bytes::from_static(b"a"), || {
            (left > 0).then(|| {
                left -= 1;
                Bytes::from_static(b"b")
            })
        })
        .expect("a batch");
        assert_eq!(two.bufs, vec!["a", "b", "b"]);
        let mut pulled = 0;
        let full = batch_after(Bytes::from_static(b"a"), || {
            pulled += 1;
            Some(Bytes::from_static(b"x"))
        })
        .expect("a batch");
        assert_eq!(full.len(), IOV_BATCH_MAX);
        assert_eq!(pulled, IOV_BATCH_MAX - 1, "nothing taken beyond the limit");
    }

    #[test]
    fn advance_drops_written_buffers_and_slices_the_partial_one() {
        let mut v = ByteVecs::default();
        v.push(Bytes::from_static(b"abc"));
        v.push(Bytes::new());
        v.push(Bytes::from_static(b"defg"));
        assert_eq!(v.len(), 2);
        v.advance(4);
        assert_eq!(v.bufs, vec![Bytes::from_static(b"efg")]);
        v.rebuild();
        assert_eq!(v.read_iovec_len(), 1);
        v.advance(3);
        assert!(v.is_empty());
    }
}
