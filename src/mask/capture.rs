//! Bounded, masked capture of one output stream, and re-masking once the returned secret
//! is known.
//!
//! At most `cap` masked bytes are kept; past the cap input is drained and counted. A cut
//! log never ends with the start of a value: whatever could begin an occurrence still in
//! progress is dropped too, and counted as cut.

use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::stream::{Sink, StreamState};
use super::{Masker, MASK_MARKER, WITHHELD_NOTICE};

/// A sink keeping at most `cap` bytes, growing its buffer only as needed and never past
/// `cap`. Markers are atomic: one that does not fit is cut whole.
struct CappedSink<'a> {
    out: &'a mut Zeroizing<Vec<u8>>,
    cap: usize,
    /// Input offset of the first byte not kept, once full.
    cut_at: &'a mut Option<u64>,
}

impl CappedSink<'_> {
    fn append(&mut self, bytes: &[u8]) {
        let need = self.out.len() + bytes.len();
        if need > self.out.capacity() {
            // Grow by doubling but never past cap; copy by hand so the old buffer (which may
            // hold a not-yet-known secret) is wiped rather than freed as is.
            let new_cap = need.max(self.out.capacity() * 2).max(256).min(self.cap);
            let mut grown = Zeroizing::new(Vec::with_capacity(new_cap));
            grown.extend_from_slice(self.out);
            *self.out = grown;
        }
        self.out.extend_from_slice(bytes);
    }
}

impl Sink for CappedSink<'_> {
    fn raw(&mut self, at: u64, bytes: &[u8]) -> bool {
        let room = self.cap - self.out.len();
        if bytes.len() <= room {
            self.append(bytes);
            return true;
        }
        self.append(&bytes[..room]);
        *self.cut_at = Some(at + room as u64);
        false
    }
    fn marker(&mut self, at: u64) -> bool {
        if MASK_MARKER.len() <= self.cap - self.out.len() {
            self.append(MASK_MARKER.as_bytes());
            return true;
        }
        *self.cut_at = Some(at);
        false
    }
}

enum Mode {
    Streaming(Box<StreamState>),
    /// Past the cap: input is only counted.
    Cut,
    /// The masker withholds: input is only counted.
    Withheld,
}

/// Bounded, masked capture of one output stream.
///
/// Memory stays below `cap` + 2 × [`Masker::max_pattern_len`] + a small constant however much
/// is pushed; past the cap input is drained and counted but not kept.
pub struct LogCapture {
    masker: Arc<Masker>,
    cap: usize,
    mode: Mode,
    /// Masked output kept so far (at most `cap` bytes).
    pub(super) out: Zeroizing<Vec<u8>>,
    /// Input bytes pushed.
    total: u64,
    /// Input offset of the first byte not represented in `out`, once cut.
    cut_at: Option<u64>,
}

impl fmt::Debug for LogCapture {
    // Held-back bytes are unmasked, and the kept output may contain a secret not yet known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogCapture")
            .field("cap", &self.cap)
            .field("total", &self.total)
            .field("kept", &self.out.len())
            .field("cut", &self.cut_at.is_some())
            .field("withheld", &matches!(self.mode, Mode::Withheld))
            .finish_non_exhaustive()
    }
}

impl LogCapture {
    /// A capture keeping at most `cap` bytes of masked output.
    pub fn new(masker: Arc<Masker>, cap: usize) -> Self {
        let mode = if masker.withholds {
            Mode::Withheld
        } else {
            Mode::Streaming(Box::new(StreamState::new(&masker)))
        };
        LogCapture {
            masker,
            cap,
            mode,
            out: Zeroizing::new(Vec::new()),
            total: 0,
            cut_at: None,
        }
    }

    /// Feed a chunk as read.
    pub fn push(&mut self, chunk: &[u8]) {
        self.total += chunk.len() as u64;
        let Mode::Streaming(state) = &mut self.mode else {
            return;
        };
        let mut sink = CappedSink {
            out: &mut self.out,
            cap: self.cap,
            cut_at: &mut self.cut_at,
        };
        if !state.push(&self.masker, chunk, &mut sink) {
            // Dropping the state wipes the held-back bytes; they are never shown.
            self.mode = Mode::Cut;
        }
    }

    /// Input bytes pushed so far.
    pub fn total_bytes(&self) -> u64 {
        self.total
    }

    /// Whether the cap has been reached and input is being dropped.
    pub fn is_cut(&self) -> bool {
        matches!(self.mode, Mode::Cut)
    }

    /// Bytes currently allocated for buffering (kept output plus held-back input), for
    /// tests and metrics.
    pub fn buffered_bytes(&self) -> usize {
        let held = match &self.mode {
            Mode::Streaming(s) => s.held_capacity(),
            _ => 0,
        };
        self.out.capacity() + held
    }

    /// End of stream.
    pub fn finish(mut self) -> CapturedLog {
        if let Mode::Withheld = self.mode {
            return CapturedLog::withheld_log(Some(self.masker));
        }
        if let Mode::Streaming(state) = &mut self.mode {
            let mut sink = CappedSink {
                out: &mut self.out,
                cap: self.cap,
                cut_at: &mut self.cut_at,
            };
            state.finish(&mut sink);
        }
        let mut log = CapturedLog {
            kept: self.out.len(),
            text: std::mem::take(&mut self.out),
            cut_bytes: 0,
            withheld: false,
            masked_with: Some(self.masker.clone()),
        };
        if let Some(cut_at) = self.cut_at {
            // Output is final, so this trims only look-alikes; it keeps the rule simple: a
            // cut log never ends with the start of a value.
            let trimmed = self.masker.live_tail(&log.text);
            let keep = log.text.len() - trimmed;
            log.text.truncate(keep);
            log.kept = log.text.len();
            log.cut_bytes = self.total - cut_at + trimmed as u64;
            log.append_cut_marker();
        }
        log
    }
}

/// A finished, masked, capped log.
#[derive(Clone, Default)]
pub struct CapturedLog {
    /// Masked bytes, then the cut marker if any.
    text: Zeroizing<Vec<u8>>,
    /// Length of the masked part of `text`, before the cut marker.
    kept: usize,
    cut_bytes: u64,
    withheld: bool,
    /// The masker the text went through, so that [`CapturedLog::remask`] can find values
    /// whose inner parts were already replaced by markers.
    masked_with: Option<Arc<Masker>>,
}

impl fmt::Debug for CapturedLog {
    // Until remasked with the secret, the text may contain it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CapturedLog")
            .field("len", &self.text.len())
            .field("cut_bytes", &self.cut_bytes)
            .field("withheld", &self.withheld)
            .finish_non_exhaustive()
    }
}

impl CapturedLog {
    fn withheld_log(masked_with: Option<Arc<Masker>>) -> CapturedLog {
        let text = Zeroizing::new(WITHHELD_NOTICE.as_bytes().to_vec());
        CapturedLog {
            kept: text.len(),
            text,
            cut_bytes: 0,
            withheld: true,
            masked_with,
        }
    }

    fn append_cut_marker(&mut self) {
        self.text.truncate(self.kept);
        let marker = format!("\n[… {} bytes cut]\n", self.cut_bytes);
        self.text.extend_from_slice(marker.as_bytes());
    }

    /// Mask again with a larger set (the variables plus the returned secret).
    ///
    /// If the text was captured with another masker, forms of the new values as that
    /// masker left them (e.g. a secret `user:pass` whose `user` part is a variable, now
    /// `***:pass`) are masked too. A cut log also loses any trailing start of a new value.
    /// A withholding `masker` withholds the whole log.
    pub fn remask(&mut self, masker: &Masker) {
        if self.withheld {
            return;
        }
        if masker.withholds() {
            *self = CapturedLog::withheld_log(self.masked_with.take());
            return;
        }
        let kept = &self.text[..self.kept];
        // A value as the earlier masker left it holds a marker: without one in the text,
        // there is nothing such a form could match, and building it can be skipped.
        let has_marker = kept
            .windows(MASK_MARKER.len())
            .any(|w| w == MASK_MARKER.as_bytes());
        let combined = match &self.masked_with {
            Some(prev) if has_marker => masker.with_premasked_forms(prev),
            _ => None,
        };
        let m = combined.as_ref().unwrap_or(masker);
        if m.withholds() {
            *self = CapturedLog::withheld_log(self.masked_with.take());
            return;
        }
        let mut text = Zeroizing::new(m.mask(kept));
        if self.is_cut() {
            let trimmed = m.live_tail(&text);
            let keep = text.len() - trimmed;
            text.truncate(keep);
            self.cut_bytes += trimmed as u64;
        }
        self.kept = text.len();
        self.text = text;
        if self.is_cut() {
            self.append_cut_marker();
        }
    }

    /// The masked bytes, including any cut marker.
    pub fn as_bytes(&self) -> &[u8] {
        &self.text
    }

    /// How many bytes were dropped past the cap (input bytes, plus any trailing bytes
    /// trimmed because they could start a value).
    pub fn cut_bytes(&self) -> u64 {
        self.cut_bytes
    }

    /// Whether output was dropped past the cap.
    pub fn is_cut(&self) -> bool {
        self.cut_bytes > 0
    }

    /// Whether the log was replaced by [`WITHHELD_NOTICE`].
    pub fn withheld(&self) -> bool {
        self.withheld
    }

    /// The last `max` bytes, as lossy UTF-8, for error messages.
    ///
    /// Starts after any `*` run the cut would split (so no partial marker) and on a
    /// character boundary.
    pub fn tail(&self, max: usize) -> String {
        let t = self.text.as_slice();
        let mut start = t.len().saturating_sub(max);
        while start > 0 && start < t.len() && t[start] == b'*' && t[start - 1] == b'*' {
            start += 1;
        }
        // Skip at most 3 UTF-8 continuation bytes.
        let mut skipped = 0;
        while start < t.len() && skipped < 3 && (t[start] & 0xc0) == 0x80 {
            start += 1;
            skipped += 1;
        }
        String::from_utf8_lossy(&t[start..]).into_owned()
    }
}
