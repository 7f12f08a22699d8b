//! Masking of secret and variable values in script output, and capped log capture.
//!
//! STUB: replaced by the masking work; the public API below is the contract.

use std::sync::Arc;

/// Values shorter than this cannot be masked without destroying the log.
pub const MIN_MASK_LEN: usize = 4;

/// An immutable set of values to mask, in all their encoded forms.
#[derive(Debug, Default)]
pub struct Masker {}

impl Masker {
    /// Build from values; empty values are ignored.
    pub fn new<'a>(_values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        Masker {}
    }
    /// Mask a complete buffer.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        input.to_vec()
    }
    /// Whether a value is too short to mask, so logs must be withheld.
    pub fn withholds(&self) -> bool {
        false
    }
}

/// Bounded, masked capture of one output stream.
#[derive(Debug)]
pub struct LogCapture {
    buf: Vec<u8>,
}

impl LogCapture {
    /// A capture keeping at most `cap` bytes.
    pub fn new(_masker: Arc<Masker>, _cap: usize) -> Self {
        LogCapture { buf: Vec::new() }
    }
    /// Feed a chunk as read.
    pub fn push(&mut self, chunk: &[u8]) {
        self.buf.extend_from_slice(chunk);
    }
    /// End of stream.
    pub fn finish(self) -> CapturedLog {
        CapturedLog {
            text: self.buf,
            cut_bytes: 0,
        }
    }
}

/// A finished, masked, capped log.
#[derive(Debug, Clone, Default)]
pub struct CapturedLog {
    text: Vec<u8>,
    cut_bytes: u64,
}

impl CapturedLog {
    /// Mask again with a larger set (the variables plus the returned secret).
    pub fn remask(&mut self, masker: &Masker) {
        self.text = masker.mask(&self.text);
    }
    /// The masked bytes, including any cut marker.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }
    /// How many bytes were dropped past the cap.
    pub fn cut_bytes(&self) -> u64 {
        self.cut_bytes
    }
    /// The last `max` bytes, as lossy UTF-8, for error messages.
    pub fn tail(&self, max: usize) -> String {
        let s = &self.text[self.text.len().saturating_sub(max)..];
        String::from_utf8_lossy(s).into_owned()
    }
}
