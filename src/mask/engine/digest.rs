//! What the engine keeps of a form: its length, hash and first bytes, computed from the
//! form's pieces without building it (and, for re-masking, from the form as another masker
//! masks it).

use zeroize::{Zeroize, Zeroizing};

use super::hash::{hasher, Hasher};
use super::{ANCHOR, STEP};
use crate::mask::forms::Gen;
use crate::mask::stream::StreamState;
use crate::mask::Masker;

/// What the engine keeps of a form: its length, hash and first [`ANCHOR`] bytes (all of
/// it when that short). Computed from the form's pieces without building it.
pub(in crate::mask) struct Digest {
    pub(super) len: u64,
    /// Hash of the bytes before `buf`.
    pub(super) hash: u64,
    pub(super) head: Zeroizing<Vec<u8>>,
    /// Pieces not yet hashed: small ones are gathered so that hashing runs on blocks.
    buf: Zeroizing<Vec<u8>>,
}

impl Clone for Digest {
    fn clone(&self) -> Digest {
        debug_assert!(self.buf.is_empty(), "only finished digests are kept");
        Digest {
            len: self.len,
            hash: self.hash,
            head: self.head.clone(),
            buf: Zeroizing::new(Vec::new()),
        }
    }
}

impl PartialEq for Digest {
    fn eq(&self, other: &Digest) -> bool {
        self.len == other.len && self.hash == other.hash
    }
}

impl Digest {
    const BLOCK: usize = 8192;

    fn new() -> Digest {
        Digest {
            len: 0,
            hash: 0,
            head: Zeroizing::new(Vec::with_capacity(ANCHOR)),
            buf: Zeroizing::new(Vec::new()),
        }
    }

    /// Hash what is gathered and let the gathering buffer go: a kept digest is small.
    fn finish(&mut self, hs: &Hasher) {
        self.flush(hs);
        self.buf = Zeroizing::new(Vec::new());
    }

    /// The digest of the form `gen` produces.
    pub(in crate::mask) fn of(gen: Gen<'_>) -> Digest {
        let mut d = Digest::new();
        let hs = hasher();
        gen(&mut |p| d.feed(hs, p));
        d.finish(hs);
        d
    }

    /// The digest of the form `gen` produces, as `m` masks it.
    pub(in crate::mask) fn masked(m: &Masker, gen: Gen<'_>) -> Digest {
        let mut d = Digest::new();
        let hs = hasher();
        let mut st = StreamState::new(m);
        let mut out = Zeroizing::new(Vec::new());
        gen(&mut |p| {
            for piece in p.chunks(STEP) {
                st.push(m, piece, &mut *out);
                d.feed(hs, &out);
                out.clear();
            }
        });
        st.finish(&mut *out);
        d.feed(hs, &out);
        d.finish(hs);
        d
    }

    /// The digest of this form followed by `suffix`.
    pub(in crate::mask) fn followed_by(&self, suffix: &[u8]) -> Digest {
        let hs = hasher();
        let mut d = Digest {
            len: self.len,
            hash: hs.extend(self.hash, &self.buf),
            head: self.head.clone(),
            buf: Zeroizing::new(Vec::new()),
        };
        d.feed(hs, suffix);
        d.finish(hs);
        d
    }

    fn feed(&mut self, hs: &Hasher, p: &[u8]) {
        let room = ANCHOR - self.head.len();
        self.head.extend_from_slice(&p[..room.min(p.len())]);
        self.len += p.len() as u64;
        if p.len() >= Self::BLOCK {
            self.flush(hs);
            self.hash = hs.extend(self.hash, p);
            return;
        }
        if self.buf.len() + p.len() > Self::BLOCK {
            self.flush(hs);
        }
        if self.buf.capacity() == 0 {
            // One allocation, never grown (so no unwiped copies).
            self.buf.reserve_exact(Self::BLOCK);
        }
        self.buf.extend_from_slice(p);
    }

    fn flush(&mut self, hs: &Hasher) {
        self.hash = hs.extend(self.hash, &self.buf);
        self.buf.clear();
    }

    pub(in crate::mask) fn len(&self) -> usize {
        self.len as usize
    }
}

impl Drop for Digest {
    fn drop(&mut self) {
        self.hash.zeroize();
    }
}
