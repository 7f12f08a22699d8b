//! Streaming masking: turns the occurrences the engine reports into output, holding back
//! only the bytes an occurrence still in progress could cover.
//!
//! Output for input offsets before the engine's `live_from` is final: every occurrence that
//! could cover them has been reported. Each merged run of matched bytes becomes one
//! [`MASK_MARKER`]; the rest is copied. Held bytes are fewer than the longest occurrence
//! ([`Masker::max_pattern_len`]), whatever the chunking, in a buffer of at most twice that.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::engine::{Scanner, STEP};
use super::{Masker, MASK_MARKER, WITHHELD_NOTICE};

/// Where finalised output goes. `at` is the input offset the piece starts at. Returning
/// false means "full": the stream stops feeding this sink.
pub(super) trait Sink {
    fn raw(&mut self, at: u64, bytes: &[u8]) -> bool;
    fn marker(&mut self, at: u64) -> bool;
}

impl Sink for Vec<u8> {
    fn raw(&mut self, _at: u64, bytes: &[u8]) -> bool {
        self.extend_from_slice(bytes);
        true
    }
    fn marker(&mut self, _at: u64) -> bool {
        self.extend_from_slice(MASK_MARKER.as_bytes());
        true
    }
}

/// A merged run of matched input, `[start, end)` in input offsets.
#[derive(Clone, Copy)]
struct Span {
    start: u64,
    end: u64,
    /// Its marker has been written.
    emitted: bool,
}

/// Input bytes `[at, at + len)` not yet final, kept between pieces, in `buf[start..]`.
/// They may be secret: the buffer is wiped when dropped, and copied by hand (old buffer
/// wiped) when it grows. Its capacity stays below twice the longest occurrence (the
/// `limit`): dead bytes are compacted away once they outnumber live ones, so each byte is
/// moved O(1) times however slowly the front advances.
struct Held {
    buf: Zeroizing<Vec<u8>>,
    start: usize,
    at: u64,
    limit: usize,
}

impl Held {
    fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    fn capacity(&self) -> usize {
        self.buf.capacity()
    }

    fn bytes(&self, from: u64, to: u64) -> &[u8] {
        let s = self.start + (from - self.at) as usize;
        &self.buf[s..s + (to - from) as usize]
    }

    /// Keep `[from, base + piece.len())`, where `from` ≥ `at` and the held bytes end at
    /// `base`, where `piece` starts.
    fn retain(&mut self, from: u64, piece: &[u8], base: u64) {
        let new = if from <= base {
            self.start += (from - self.at) as usize;
            piece
        } else {
            self.start = self.buf.len();
            &piece[(from - base) as usize..]
        };
        self.at = from;
        let live = self.len();
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        if self.buf.len() + new.len() > self.buf.capacity() {
            if self.start >= live && live + new.len() <= self.buf.capacity() {
                self.buf.copy_within(self.start.., 0);
                self.buf.truncate(live);
            } else {
                // Doubling, but not past twice the limit while that suffices (held bytes
                // stay below the limit), so that growth is amortised either way.
                let need = live + new.len();
                let doubled = (2 * self.buf.capacity()).max(64);
                let cap = if need <= 2 * self.limit {
                    need.max(doubled.min(2 * self.limit))
                } else {
                    need.max(doubled)
                };
                let mut grown = Zeroizing::new(Vec::with_capacity(cap));
                grown.extend_from_slice(&self.buf[self.start..]);
                self.buf = grown;
            }
            self.start = 0;
        }
        self.buf.extend_from_slice(new);
    }
}

/// Streaming masking state, independent of the masker (passed to each call) so that it can
/// live next to an `Arc<Masker>` without borrowing it.
pub(super) struct StreamState {
    /// `None` when there is nothing to mask: input passes through.
    scan: Option<Scanner>,
    /// Input bytes consumed.
    consumed: u64,
    /// Input offset below which output is final and written.
    ws: u64,
    held: Held,
    /// Matched spans that may still grow or merge: sorted, disjoint, never adjacent.
    spans: VecDeque<Span>,
    /// Occurrences reported by the last scan.
    found: Vec<(u64, u64)>,
}

impl StreamState {
    pub(super) fn new(m: &Masker) -> StreamState {
        StreamState {
            scan: m.engine.as_ref().map(Scanner::new),
            consumed: 0,
            ws: 0,
            held: Held {
                buf: Zeroizing::new(Vec::new()),
                start: 0,
                at: 0,
                limit: m.max_pattern_len(),
            },
            spans: VecDeque::new(),
            found: Vec::new(),
        }
    }

    /// Consume a chunk, writing whatever became final. False if the sink refused more; the
    /// state must then be dropped.
    pub(super) fn push(&mut self, m: &Masker, chunk: &[u8], sink: &mut impl Sink) -> bool {
        let (Some(scan), Some(engine)) = (&mut self.scan, &m.engine) else {
            let at = self.consumed;
            self.consumed += chunk.len() as u64;
            self.ws = self.consumed;
            self.held.at = self.consumed;
            return chunk.is_empty() || sink.raw(at, chunk);
        };
        for piece in chunk.chunks(STEP) {
            let base = self.consumed;
            self.consumed += piece.len() as u64;
            scan.scan(engine, piece, &mut self.found);
            self.found.sort_unstable();
            for i in 0..self.found.len() {
                let (s, e) = self.found[i];
                add_span(&mut self.spans, s, e);
            }
            self.found.clear();
            let upto = scan.live_from(engine).max(self.ws);
            let input = Input {
                held: &self.held,
                piece,
                base,
            };
            if !emit(&mut self.ws, &mut self.spans, input, upto, sink) {
                return false;
            }
            self.held.retain(self.ws, piece, base);
        }
        true
    }

    /// End of input: everything is final.
    pub(super) fn finish(&mut self, sink: &mut impl Sink) -> bool {
        let input = Input {
            held: &self.held,
            piece: &[],
            base: self.consumed,
        };
        emit(&mut self.ws, &mut self.spans, input, self.consumed, sink)
    }

    /// Input bytes held back.
    pub(super) fn held_len(&self) -> usize {
        self.held.len()
    }

    /// Bytes allocated for held-back input.
    pub(super) fn held_capacity(&self) -> usize {
        self.held.capacity()
    }

    /// Spans waiting to be written.
    #[cfg(test)]
    pub(super) fn pending_spans(&self) -> usize {
        self.spans.len()
    }

    /// Candidate runs the engine holds.
    #[cfg(test)]
    pub(super) fn candidate_runs(&self) -> usize {
        self.scan.as_ref().map_or(0, Scanner::candidate_runs)
    }
}

/// Merge `[s, e)` into `spans`, joining every span it overlaps or touches.
fn add_span(spans: &mut VecDeque<Span>, s: u64, e: u64) {
    let i = spans.partition_point(|sp| sp.end < s);
    let (mut start, mut end, mut emitted) = (s, e, false);
    let mut j = i;
    while j < spans.len() && spans[j].start <= e {
        start = start.min(spans[j].start);
        end = end.max(spans[j].end);
        emitted |= spans[j].emitted;
        j += 1;
    }
    if j == i + 1 {
        spans[i] = Span {
            start,
            end,
            emitted,
        };
        return;
    }
    spans.drain(i..j);
    spans.insert(
        i,
        Span {
            start,
            end,
            emitted,
        },
    );
}

/// The input not yet final: held bytes up to `base`, then the current piece.
#[derive(Clone, Copy)]
struct Input<'a> {
    held: &'a Held,
    piece: &'a [u8],
    base: u64,
}

/// Write output for input offsets `[ws, upto)`.
fn emit(
    ws: &mut u64,
    spans: &mut VecDeque<Span>,
    input: Input<'_>,
    upto: u64,
    sink: &mut impl Sink,
) -> bool {
    while *ws < upto {
        let stop = match spans.front_mut() {
            Some(front) if front.start <= *ws => {
                if !front.emitted {
                    if !sink.marker(front.start) {
                        return false;
                    }
                    front.emitted = true;
                }
                if front.end < upto {
                    // The byte at `front.end` is final and unmatched: the span is closed.
                    *ws = front.end;
                    spans.pop_front();
                } else {
                    // Keep it: a later occurrence may still extend it or touch it.
                    *ws = upto;
                }
                continue;
            }
            Some(front) => front.start.min(upto),
            None => upto,
        };
        let (a, b) = (*ws, stop);
        let Input { held, piece, base } = input;
        if a < base && !sink.raw(a, held.bytes(a, b.min(base))) {
            return false;
        }
        if b > base {
            let s = a.max(base);
            if !sink.raw(s, &piece[(s - base) as usize..(b - base) as usize]) {
                return false;
            }
        }
        *ws = stop;
    }
    true
}

/// Masks a stream fed in arbitrary chunks; output equals [`Masker::mask`] of the whole.
///
/// At most ([`Masker::max_pattern_len`] − 1) input bytes are held back between calls, so a
/// value split across chunks (even one byte per chunk) is still masked.
pub struct MaskStream {
    masker: Arc<Masker>,
    /// `None` when withholding: input is swallowed.
    state: Option<StreamState>,
}

impl fmt::Debug for MaskStream {
    // Held bytes are unmasked input: never print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MaskStream")
            .field("masker", &self.masker)
            .field("held", &self.held_len())
            .finish_non_exhaustive()
    }
}

impl MaskStream {
    /// A stream masked with `masker`.
    pub fn new(masker: Arc<Masker>) -> MaskStream {
        let state = (!masker.withholds).then(|| StreamState::new(&masker));
        MaskStream { masker, state }
    }

    /// Feed a chunk; append whatever output became final to `out`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        if let Some(state) = &mut self.state {
            state.push(&self.masker, chunk, out);
        }
    }

    /// End of stream: append the rest of the output (or [`WITHHELD_NOTICE`]).
    pub fn finish(mut self, out: &mut Vec<u8>) {
        match &mut self.state {
            Some(state) => {
                state.finish(out);
            }
            None => out.extend_from_slice(WITHHELD_NOTICE.as_bytes()),
        }
    }

    /// Input bytes currently held back (less than [`Masker::max_pattern_len`]).
    pub fn held_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.held_len())
    }

    #[cfg(test)]
    pub(super) fn state(&self) -> Option<&StreamState> {
        self.state.as_ref()
    }
}

/// Mask a whole buffer (a stream fed once).
pub(super) fn mask_all(m: &Masker, input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut state = StreamState::new(m);
    state.push(m, input, &mut out);
    state.finish(&mut out);
    out
}
