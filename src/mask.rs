//! Masking of secret and variable values in script output, and capped log capture.
//!
//! This module owns everything that stands between a script's raw output and anything a
//! person or another system may see:
//! - [`Masker`]: an immutable set of values, expanded into the encoded forms a script is
//!   likely to print (raw, JSON-escaped, base64 at every byte alignment, URL-encoded, and a
//!   few shell/PTY variants), matched in linear time with an Aho-Corasick automaton.
//! - [`MaskStream`]: the same masking over a stream cut into arbitrary chunks, holding back
//!   at most (longest pattern − 1) bytes, with output identical to whole-buffer masking.
//! - [`LogCapture`] / [`CapturedLog`]: bounded capture of one output stream (at most `cap`
//!   masked bytes are kept, the rest is drained and counted), and re-masking once the
//!   returned secret is known.
//!
//! Every occurrence of every form becomes [`MASK_MARKER`]; overlapping and adjacent
//! occurrences are merged into one marker, so neither lengths nor counts leak. A non-empty
//! value shorter than [`MIN_MASK_LEN`] cannot be masked without destroying the log, so such
//! a masker *withholds*: whole outputs are replaced by [`WITHHELD_NOTICE`].

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, Input, MatchKind};
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use zeroize::Zeroizing;

/// Values shorter than this (in bytes) cannot be masked without destroying the log.
///
/// Masking every occurrence of, say, `ab` would shred ordinary text and still let the
/// value be inferred from what is left, so a masker holding such a value withholds whole
/// logs instead (see [`Masker::withholds`]). Encoded forms shorter than this are not
/// masked at all: they would match too much unrelated text.
pub const MIN_MASK_LEN: usize = 4;

/// What each masked occurrence becomes: one fixed marker, whatever the value's length.
pub const MASK_MARKER: &str = "***";

/// What replaces a whole log when a value is too short to mask.
pub const WITHHELD_NOTICE: &str = "[log withheld: a value shorter than 4 bytes cannot be masked]";

/// How many bytes of a chunk are scanned before finalising output, so the queue of pending
/// matches stays small whatever the chunk size.
const STEP: usize = 1024;

/// A pattern: one encoded form of one value, wiped on drop.
type Pattern = Zeroizing<Vec<u8>>;

/// An immutable set of values to mask, in all their encoded forms.
///
/// Cheap to share: wrap it in an [`Arc`]; it is `Send + Sync`.
#[derive(Default)]
pub struct Masker {
    /// Every encoded form of every value, sorted and deduplicated. Kept (zeroised on drop)
    /// so that [`Masker::extended`] and [`CapturedLog::remask`] can build on them.
    patterns: Vec<Pattern>,
    /// Standard-semantics automaton over `patterns`; `None` when there is nothing to mask.
    /// aho-corasick copies the patterns into its own tables, which cannot be zeroised: that
    /// copy lives as long as the masker.
    nfa: Option<NFA>,
    /// Length of the longest pattern.
    max_len: usize,
    /// A value is too short to mask (or the automaton could not be built): fail closed.
    withholds: bool,
}

impl fmt::Debug for Masker {
    // Patterns are secrets: show only harmless shape information.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.patterns.len())
            .field("withholds", &self.withholds)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Build from values; empty values are ignored.
    ///
    /// A non-empty value shorter than [`MIN_MASK_LEN`] makes the masker withhold.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        let mut patterns = Vec::new();
        let mut withholds = false;
        add_values(values, &mut patterns, &mut withholds);
        Masker::from_patterns(patterns, withholds)
    }

    /// Build from template variable values. A value shorter than [`MIN_MASK_LEN`] is left
    /// unmasked rather than withholding the log: such values (a region, an engine name)
    /// are rarely secrets, and the minimum is documented. The returned secret is added
    /// with [`Masker::extended`], which stays strict.
    pub fn for_variables<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        Masker::new(values.into_iter().filter(|v| v.len() >= MIN_MASK_LEN))
    }

    /// A new masker with this one's values plus `values` (e.g. the variables plus the
    /// returned secret).
    pub fn extended<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        let mut patterns = self.patterns.clone();
        let mut withholds = self.withholds;
        add_values(values, &mut patterns, &mut withholds);
        Masker::from_patterns(patterns, withholds)
    }

    fn from_patterns(mut patterns: Vec<Pattern>, mut withholds: bool) -> Masker {
        patterns.sort_unstable_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let max_len = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let nfa = if patterns.is_empty() {
            None
        } else {
            // Standard semantics reports every occurrence, overlapping ones included; the
            // union of their spans is what gets masked.
            let built = NFA::builder()
                .match_kind(MatchKind::Standard)
                .build(patterns.iter().map(|p| p.as_slice()));
            match built {
                Ok(nfa) => Some(nfa),
                Err(_) => {
                    // Too many patterns for the automaton: nothing can be masked, so
                    // nothing may be shown.
                    withholds = true;
                    None
                }
            }
        };
        Masker {
            patterns,
            nfa,
            max_len,
            withholds,
        }
    }

    /// Mask a complete buffer.
    ///
    /// Returns [`WITHHELD_NOTICE`] instead when [`Masker::withholds`] is true.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        if self.withholds {
            return WITHHELD_NOTICE.as_bytes().to_vec();
        }
        self.mask_spans(input)
            .unwrap_or_else(|| WITHHELD_NOTICE.as_bytes().to_vec())
    }

    /// Mask text for an error message or a log line (lossy UTF-8 where a match split a
    /// multi-byte character).
    pub fn mask_str(&self, input: &str) -> String {
        match String::from_utf8(self.mask(input.as_bytes())) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        }
    }

    /// Whether a value is too short to mask, so logs must be withheld.
    pub fn withholds(&self) -> bool {
        self.withholds
    }

    /// Whether there is nothing to mask (no non-empty value was given).
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Number of distinct encoded forms matched.
    pub fn pattern_count(&self) -> usize {
        self.patterns.len()
    }

    /// Length of the longest encoded form: a stream holds back at most this minus one byte.
    pub fn max_pattern_len(&self) -> usize {
        self.max_len
    }

    /// Whole-buffer masking; `None` if the automaton refuses the search (fail closed).
    ///
    /// Deliberately independent of the streaming path (it uses the library's overlapping
    /// search, prefilter included), so that tests comparing the two mean something.
    fn mask_spans(&self, input: &[u8]) -> Option<Vec<u8>> {
        let Some(nfa) = &self.nfa else {
            return Some(input.to_vec());
        };
        // Matches arrive by non-decreasing end, so merging against the last span suffices,
        // but a long match may swallow several earlier spans.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for m in nfa.try_find_overlapping_iter(Input::new(input)).ok()? {
            let (mut s, e) = (m.start(), m.end());
            while let Some(&(ts, te)) = spans.last() {
                if te < s {
                    break;
                }
                s = s.min(ts);
                spans.pop();
            }
            spans.push((s, e));
        }
        let mut out = Vec::with_capacity(input.len());
        let mut at = 0;
        for (s, e) in spans {
            out.extend_from_slice(&input[at..s]);
            out.extend_from_slice(MASK_MARKER.as_bytes());
            at = e;
        }
        out.extend_from_slice(&input[at..]);
        Some(out)
    }

    /// Length of the longest suffix of `text` that is a proper prefix of some pattern: what
    /// must go when text is cut, lest it end with the start of a value.
    fn partial_suffix_len(&self, text: &[u8]) -> usize {
        let mut best = 0;
        for p in &self.patterns {
            let most = (p.len() - 1).min(text.len());
            for k in (best + 1..=most).rev() {
                if text.ends_with(&p[..k]) {
                    best = k;
                    break;
                }
            }
        }
        best
    }

    /// Longest pattern among the matches of a match state.
    fn longest_match(nfa: &NFA, sid: StateID) -> usize {
        (0..nfa.match_len(sid))
            .map(|i| nfa.pattern_len(nfa.match_pattern(sid, i)))
            .max()
            .unwrap_or(0)
    }
}

// ---------------------------------------------------------------------------------------
// Encoded forms
// ---------------------------------------------------------------------------------------

fn add_values<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    patterns: &mut Vec<Pattern>,
    withholds: &mut bool,
) {
    for v in values {
        if v.is_empty() {
            continue;
        }
        if v.len() < MIN_MASK_LEN {
            *withholds = true;
        }
        add_forms(v, patterns);
    }
}

/// Push every form of `v` worth masking: the raw bytes always, any other form only if it
/// differs from the raw one and is at least [`MIN_MASK_LEN`] long.
fn add_forms(v: &[u8], out: &mut Vec<Pattern>) {
    out.push(Zeroizing::new(v.to_vec()));
    let mut add = |form: Pattern| {
        if form.as_slice() != v && form.len() >= MIN_MASK_LEN {
            out.push(form);
        }
    };

    // A PTY (SSH runs) turns "\n" into "\r\n".
    if v.contains(&b'\n') {
        add(crlf(v));
    }
    // `set -x` traces show a value with `'` as 'it'\''s'.
    if v.contains(&b'\'') {
        add(replace_byte(v, b'\'', b"'\\''"));
    }

    // JSON string contents: as serde_json/jq/JavaScript write them, with `\/` (PHP), and
    // ASCII-only with \uXXXX escapes (Python's json.dumps default).
    match std::str::from_utf8(v) {
        Ok(s) => {
            if let Ok(quoted) = serde_json::to_string(s).map(Zeroizing::new) {
                let inner = Zeroizing::new(quoted.as_bytes()[1..quoted.len() - 1].to_vec());
                if inner.contains(&b'/') {
                    add(replace_byte(&inner, b'/', b"\\/"));
                }
                add(inner);
            }
            add(json_ascii_only(s));
        }
        // Not UTF-8: the byte-oriented form a lenient encoder would write.
        Err(_) => add(json_escape_bytes(v)),
    }

    // Base64, standard and URL-safe alphabets.
    for (padded, unpadded) in [(&STANDARD, &STANDARD_NO_PAD), (&URL_SAFE, &URL_SAFE_NO_PAD)] {
        add(Zeroizing::new(padded.encode(v).into_bytes()));
        add(Zeroizing::new(unpadded.encode(v).into_bytes()));
        for align in 0..3 {
            add(base64_core(unpadded, v, align));
        }
    }
    // `base64` (GNU, 76 columns) and `openssl base64` (64) wrap long output. A value encoded
    // on its own (`echo "$v" | base64`) starts at column 0, so its wrapped core is fixed;
    // "\r\n" for a PTY.
    let core = base64_core(&STANDARD_NO_PAD, v, 0);
    for width in [76, 64] {
        if core.len() > width {
            for eol in [b"\n" as &[u8], b"\r\n"] {
                add(wrap_lines(&core, width, eol));
            }
        }
    }

    // Percent-encoding: RFC 3986 strict (curl, jq @uri) in upper and lower case hex, form
    // encoding with `+` for space, encodeURIComponent, and Python's quote() keeping `/`.
    for (keep, plus, lower) in [
        (b"" as &[u8], false, false),
        (b"", false, true),
        (b"", true, false),
        (b"", true, true),
        (b"!'()*", false, false),
        (b"/", false, false),
    ] {
        add(percent_encode(v, keep, plus, lower));
    }
}

/// The base64 characters fully determined by `v` when it starts `align` bytes into a
/// 3-byte group of a longer stream: the full groups inside `v` plus the edge characters
/// whose 6 bits all come from `v`. Whatever precedes or follows `v` (e.g. the newline of
/// `echo "$v" | base64`), these characters appear verbatim in the stream's encoding.
fn base64_core(engine: &impl Engine, v: &[u8], align: usize) -> Pattern {
    let mut shifted = Zeroizing::new(Vec::with_capacity(align + v.len()));
    shifted.resize(align, 0);
    shifted.extend_from_slice(v);
    let enc = Zeroizing::new(engine.encode(shifted.as_slice()).into_bytes());
    // Character i covers bits [6i, 6i+6); v covers bits [8·align, 8·(align+len)).
    let first = (8 * align).div_ceil(6);
    let end = (8 * (align + v.len())) / 6;
    Zeroizing::new(enc.get(first..end).unwrap_or_default().to_vec())
}

fn wrap_lines(v: &[u8], width: usize, eol: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() + v.len() / width * eol.len()));
    for (i, line) in v.chunks(width).enumerate() {
        if i > 0 {
            out.extend_from_slice(eol);
        }
        out.extend_from_slice(line);
    }
    out
}

fn crlf(v: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 2));
    let mut prev = 0u8;
    for &b in v {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn replace_byte(v: &[u8], from: u8, to: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * to.len()));
    for &b in v {
        if b == from {
            out.extend_from_slice(to);
        } else {
            out.push(b);
        }
    }
    out
}

/// JSON escaping of one byte below 0x80, as serde_json does it; false if it stays as is.
fn json_escape_ascii(b: u8, out: &mut Vec<u8>) -> bool {
    let short: &[u8] = match b {
        b'"' => b"\\\"",
        b'\\' => b"\\\\",
        b'\n' => b"\\n",
        b'\r' => b"\\r",
        b'\t' => b"\\t",
        0x08 => b"\\b",
        0x0c => b"\\f",
        0..=0x1f => {
            push_u_escape(u16::from(b), out);
            return true;
        }
        _ => return false,
    };
    out.extend_from_slice(short);
    true
}

fn push_u_escape(unit: u16, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xf)]);
    }
}

/// Byte-wise JSON escaping, for values that are not UTF-8.
fn json_escape_bytes(v: &[u8]) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 2));
    for &b in v {
        if !json_escape_ascii(b, &mut out) {
            out.push(b);
        }
    }
    out
}

/// JSON escaping with every non-ASCII character (and DEL) as `\uXXXX`, as Python writes it.
fn json_ascii_only(s: &str) -> Pattern {
    let mut out = Zeroizing::new(Vec::with_capacity(s.len() * 2));
    let mut units = [0u16; 2];
    for c in s.chars() {
        if c.is_ascii() && c != '\x7f' {
            let b = c as u8;
            if !json_escape_ascii(b, &mut out) {
                out.push(b);
            }
        } else {
            for &u in c.encode_utf16(&mut units).iter() {
                push_u_escape(u, &mut out);
            }
        }
    }
    out
}

/// Percent-encode every byte outside RFC 3986 unreserved and `keep`; `plus` writes space as
/// `+` (form encoding).
fn percent_encode(v: &[u8], keep: &[u8], plus: bool, lower: bool) -> Pattern {
    let hex: &[u8; 16] = if lower {
        b"0123456789abcdef"
    } else {
        b"0123456789ABCDEF"
    };
    let mut out = Zeroizing::new(Vec::with_capacity(v.len() * 3));
    for &b in v {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.contains(&b) {
            out.push(b);
        } else if plus && b == b' ' {
            out.push(b'+');
        } else {
            out.extend_from_slice(&[b'%', hex[usize::from(b >> 4)], hex[usize::from(b & 0xf)]]);
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------------------

/// Where finalised output goes. `at` is the input offset the piece starts at. Returning
/// false means "full": the stream stops feeding this sink.
trait Sink {
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

/// Streaming masking state, independent of the masker (passed to each call) so that it can
/// live next to an `Arc<Masker>` without borrowing it.
struct StreamState {
    /// Automaton state after the bytes consumed so far.
    sid: StateID,
    /// Input bytes consumed.
    consumed: u64,
    /// Input offset below which output is final and written.
    ws: u64,
    /// Raw input bytes not yet final, starting at offset `held_at`. At most
    /// (longest pattern − 1) bytes between calls; they may be secret, hence zeroising.
    held: Zeroizing<Vec<u8>>,
    held_at: u64,
    /// Matched spans that may still grow or merge, sorted, disjoint, never adjacent.
    spans: VecDeque<Span>,
}

impl StreamState {
    /// `None` if the automaton refuses an unanchored search (never expected; fail closed).
    fn new(m: &Masker) -> Option<StreamState> {
        let sid = match &m.nfa {
            Some(nfa) => nfa.start_state(Anchored::No).ok()?,
            None => StateID::ZERO,
        };
        Some(StreamState {
            sid,
            consumed: 0,
            ws: 0,
            held: Zeroizing::new(Vec::with_capacity(m.max_len.saturating_sub(1))),
            held_at: 0,
            spans: VecDeque::new(),
        })
    }

    /// Consume a chunk, writing whatever became final. False if the sink refused more; the
    /// state must then be dropped.
    fn push(&mut self, m: &Masker, chunk: &[u8], sink: &mut impl Sink) -> bool {
        let Some(nfa) = &m.nfa else {
            let at = self.consumed;
            self.consumed += chunk.len() as u64;
            self.ws = self.consumed;
            self.held_at = self.consumed;
            return chunk.is_empty() || sink.raw(at, chunk);
        };
        // A match ending later is at most max_len long, so it cannot reach back further.
        let holdback = (m.max_len - 1) as u64;
        for piece in chunk.chunks(STEP) {
            let base = self.consumed;
            for (i, &b) in piece.iter().enumerate() {
                self.sid = nfa.next_state(Anchored::No, self.sid, b);
                if nfa.is_match(self.sid) {
                    let end = base + i as u64 + 1;
                    let len = Masker::longest_match(nfa, self.sid) as u64;
                    self.add_span(end - len, end);
                }
            }
            self.consumed += piece.len() as u64;
            let upto = self.consumed.saturating_sub(holdback).max(self.ws);
            if !self.emit(upto, piece, base, sink) {
                return false;
            }
            self.retain(piece, base);
        }
        true
    }

    /// End of input: everything is final.
    fn finish(&mut self, sink: &mut impl Sink) -> bool {
        let end = self.consumed;
        self.emit(end, &[], end, sink)
    }

    fn add_span(&mut self, mut start: u64, end: u64) {
        let mut emitted = false;
        // `end` is the furthest end yet; merge every span it overlaps or touches.
        while let Some(top) = self.spans.back() {
            if top.end < start {
                break;
            }
            start = start.min(top.start);
            emitted |= top.emitted;
            self.spans.pop_back();
        }
        self.spans.push_back(Span {
            start,
            end,
            emitted,
        });
    }

    /// Write output for input offsets `[ws, upto)`. Bytes before `base` are in `held`, the
    /// rest in `piece`.
    fn emit(&mut self, upto: u64, piece: &[u8], base: u64, sink: &mut impl Sink) -> bool {
        while self.ws < upto {
            let stop = match self.spans.front_mut() {
                Some(front) if front.start <= self.ws => {
                    if !front.emitted {
                        if !sink.marker(front.start) {
                            return false;
                        }
                        front.emitted = true;
                    }
                    if front.end < upto {
                        // The byte at `front.end` is final and unmatched: the span is closed.
                        self.ws = front.end;
                        self.spans.pop_front();
                    } else {
                        // Keep it: a later match may still extend it or touch it.
                        self.ws = upto;
                    }
                    continue;
                }
                Some(front) => front.start.min(upto),
                None => upto,
            };
            let (a, b) = (self.ws, stop);
            if a < base {
                let (hs, he) = (
                    (a - self.held_at) as usize,
                    (b.min(base) - self.held_at) as usize,
                );
                if !sink.raw(a, &self.held[hs..he]) {
                    return false;
                }
            }
            if b > base {
                let s = a.max(base);
                if !sink.raw(s, &piece[(s - base) as usize..(b - base) as usize]) {
                    return false;
                }
            }
            self.ws = stop;
        }
        true
    }

    /// Keep the not-yet-final bytes `[ws, consumed)` in `held` (at most holdback bytes, so
    /// the reserved capacity is never exceeded).
    fn retain(&mut self, piece: &[u8], base: u64) {
        if self.ws <= base {
            self.held.drain(..(self.ws - self.held_at) as usize);
            self.held.extend_from_slice(piece);
        } else {
            self.held.clear();
            self.held
                .extend_from_slice(&piece[(self.ws - base) as usize..]);
        }
        self.held_at = self.ws;
    }
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
        let state = if masker.withholds {
            None
        } else {
            StreamState::new(&masker)
        };
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

    /// Input bytes currently held back (at most longest pattern − 1).
    pub fn held_len(&self) -> usize {
        self.state.as_ref().map_or(0, |s| s.held.len())
    }
}

// ---------------------------------------------------------------------------------------
// Capture
// ---------------------------------------------------------------------------------------

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
    Streaming(StreamState),
    /// Past the cap: input is only counted.
    Cut,
    /// The masker withholds: input is only counted.
    Withheld,
}

/// Bounded, masked capture of one output stream.
///
/// Memory stays below `cap` + longest pattern + a small constant however much is pushed;
/// past the cap input is drained and counted but not kept.
pub struct LogCapture {
    masker: Arc<Masker>,
    cap: usize,
    mode: Mode,
    /// Masked output kept so far (at most `cap` bytes).
    out: Zeroizing<Vec<u8>>,
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
        let mode = match (masker.withholds, StreamState::new(&masker)) {
            (false, Some(state)) => Mode::Streaming(state),
            _ => Mode::Withheld,
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
            Mode::Streaming(s) => s.held.capacity(),
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
            let trimmed = self.masker.partial_suffix_len(&log.text);
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
        let combined = self
            .masked_with
            .as_deref()
            .and_then(|prev| with_premasked_forms(masker, prev));
        let m = combined.as_ref().unwrap_or(masker);
        if m.withholds() {
            *self = CapturedLog::withheld_log(self.masked_with.take());
            return;
        }
        let mut text = Zeroizing::new(m.mask(&self.text[..self.kept]));
        if self.is_cut() {
            let trimmed = m.partial_suffix_len(&text);
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

/// `masker` plus, for each of its patterns, the pattern as `prev` masks it, where that
/// differs. `None` if there is no such form.
fn with_premasked_forms(masker: &Masker, prev: &Masker) -> Option<Masker> {
    if prev.is_empty() || prev.withholds() {
        return None;
    }
    let extra: Vec<Pattern> = masker
        .patterns
        .iter()
        .filter_map(|p| {
            let q = Zeroizing::new(prev.mask_spans(p)?);
            (q.as_slice() != p.as_slice() && q.len() >= MIN_MASK_LEN).then_some(q)
        })
        .collect();
    if extra.is_empty() {
        return None;
    }
    let mut patterns = masker.patterns.clone();
    patterns.extend(extra);
    Some(Masker::from_patterns(patterns, masker.withholds))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker(values: &[&[u8]]) -> Masker {
        Masker::new(values.iter().copied())
    }

    fn masked(values: &[&[u8]], input: &[u8]) -> Vec<u8> {
        masker(values).mask(input)
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    fn capture(m: Masker, cap: usize, chunks: &[&[u8]]) -> CapturedLog {
        let mut c = LogCapture::new(Arc::new(m), cap);
        for ch in chunks {
            c.push(ch);
        }
        c.finish()
    }

    #[test]
    fn raw_value_becomes_one_marker() {
        assert_eq!(masked(&[b"hunter2"], b"pw=hunter2;"), b"pw=***;");
        assert_eq!(masked(&[b"hunter2"], b"hunter2"), b"***");
        assert_eq!(
            masked(&[b"a-long-secret-value"], b"x a-long-secret-value y"),
            b"x *** y"
        );
        assert_eq!(masked(&[b"hunter2"], b"nothing here"), b"nothing here");
    }

    #[test]
    fn overlapping_and_adjacent_matches_merge() {
        // Overlapping occurrences of different values: the union is covered.
        assert_eq!(masked(&[b"abcd", b"cdef"], b"xabcdefx"), b"x***x");
        // Adjacent occurrences: one marker.
        assert_eq!(masked(&[b"abcd"], b"abcdabcd!"), b"***!");
        // Longest wins over a prefix.
        assert_eq!(masked(&[b"abcd", b"abcdef"], b"abcdefg"), b"***g");
        // A later, longer match swallowing earlier separate ones.
        assert_eq!(
            masked(&[b"bcde", b"ghij", b"abcdefghijk"], b"abcdefghijk"),
            b"***"
        );
        assert_eq!(masked(&[b"bcde", b"ghij"], b"abcdefghijk"), b"a***f***k");
    }

    #[test]
    fn empty_values_are_ignored() {
        let m = masker(&[b"", b""]);
        assert!(m.is_empty());
        assert!(!m.withholds());
        assert_eq!(m.mask(b"anything"), b"anything");
        let log = capture(m, 100, &[b"any", b"thing"]);
        assert_eq!(log.as_bytes(), b"anything");
    }

    #[test]
    fn json_escaped_form() {
        let v = "multi\nline \"quoted\" back\\slash\ttab\u{1}";
        let doc = serde_json::json!({ "v": v }).to_string();
        assert!(
            !contains(doc.as_bytes(), v.as_bytes()),
            "test needs escaping"
        );
        let out = masked(&[v.as_bytes()], doc.as_bytes());
        assert_eq!(out, br#"{"v":"***"}"#);
    }

    #[test]
    fn json_slash_and_ascii_only_forms() {
        let v = "pa/ss\"wörd-😀";
        let m = masker(&[v.as_bytes()]);
        let php = r#""pa\/ss\"wörd-😀""#;
        assert_eq!(m.mask_str(php), r#""***""#);
        // Python's json.dumps: non-ASCII as \uXXXX, astral chars as surrogate pairs.
        let py = r#""pa/ss\"w\u00f6rd-\ud83d\ude00""#;
        assert_eq!(m.mask_str(py), r#""***""#);
    }

    #[test]
    fn json_byte_escaping_matches_serde_for_utf8() {
        let s = "a\"b\\c\n\r\t\u{8}\u{c}\u{1f}\u{7f}é/";
        let serde = serde_json::to_string(s).unwrap();
        assert_eq!(
            json_escape_bytes(s.as_bytes()).as_slice(),
            &serde.as_bytes()[1..serde.len() - 1]
        );
    }

    #[test]
    fn json_form_of_non_utf8_value() {
        let v: &[u8] = b"\xff\xfe\"bin\nary";
        assert_eq!(masked(&[v], b"[\"\xff\xfe\\\"bin\\nary\"]"), b"[\"***\"]");
    }

    #[test]
    fn base64_every_alignment_and_alphabet() {
        // '?' and '>' make the standard and URL-safe encodings differ.
        let v: &[u8] = b"s3cr3t??>>value";
        let m = masker(&[v]);
        for prefix_len in 0..6 {
            for suffix_len in 0..4 {
                let mut plain = b"abcdefgh"[..prefix_len].to_vec();
                plain.extend_from_slice(v);
                plain.extend_from_slice(&b"\n\nxyz"[..suffix_len]);
                for engine in [&STANDARD, &STANDARD_NO_PAD, &URL_SAFE, &URL_SAFE_NO_PAD] {
                    let enc = engine.encode(&plain);
                    let out = m.mask(enc.as_bytes());
                    assert!(contains(&out, b"***"), "{prefix_len}/{suffix_len}: {enc}");
                    // What survives is at most the bytes around the value: <= 2 chars of
                    // partial groups per side plus the encoding of prefix and suffix.
                    let survived = out.len() - 3;
                    let around = (prefix_len + suffix_len) * 4 / 3 + 6;
                    assert!(
                        survived <= around,
                        "{prefix_len}/{suffix_len}: {enc} -> {out:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn base64_of_echo_output_is_masked() {
        // `echo "$v" | base64`: the value followed by a newline.
        let v: &[u8] = b"hunter2-token";
        let mut echoed = v.to_vec();
        echoed.push(b'\n');
        let enc = STANDARD.encode(&echoed);
        let out = masked(&[v], format!("{enc}\n").as_bytes());
        assert!(out.starts_with(b"***"), "{out:?}");
        assert!(out.len() <= 3 + 4, "{:?}", String::from_utf8_lossy(&out));
        // And the plain whole-value forms, padded and not.
        assert_eq!(masked(&[v], STANDARD.encode(v).as_bytes()), b"***");
        assert_eq!(masked(&[v], STANDARD_NO_PAD.encode(v).as_bytes()), b"***");
    }

    #[test]
    fn wrapped_base64_of_a_long_value_is_masked() {
        let v = b"-----BEGIN KEY-----0123456789abcdefghijklmnopqrstuvwxyz/+ABCDEFGHIJKLMNOPQRSTUVWXYZ-----END KEY-----";
        let m = masker(&[v]);
        let mut echoed = v.to_vec();
        echoed.push(b'\n');
        for (width, eol) in [(76, "\n"), (64, "\n"), (76, "\r\n")] {
            let enc = STANDARD.encode(&echoed);
            let lines: Vec<&str> = enc
                .as_bytes()
                .chunks(width)
                .map(|l| std::str::from_utf8(l).unwrap())
                .collect();
            let wrapped = lines.join(eol);
            let out = m.mask(format!("{wrapped}{eol}").as_bytes());
            assert!(out.starts_with(b"***"), "{width}: {out:?}");
            assert!(
                out.len() <= 3 + 4 + 2 * eol.len(),
                "{width}: {}",
                String::from_utf8_lossy(&out)
            );
        }
    }

    #[test]
    fn base64_core_is_exactly_the_determined_characters() {
        let v: &[u8] = b"abcd";
        // align 0: "YWJj" + 'Z' (first 6 bits of 'd').
        assert_eq!(base64_core(&STANDARD_NO_PAD, v, 0).as_slice(), b"YWJjZ");
        for align in 0..3 {
            let core = base64_core(&STANDARD_NO_PAD, v, align);
            assert!(core.len() >= MIN_MASK_LEN);
            for pre in [0u8, 0x55, 0xff] {
                for post in [0u8, b'\n', 0xff] {
                    let mut s = vec![pre; align];
                    s.extend_from_slice(v);
                    s.push(post);
                    let enc = STANDARD.encode(&s);
                    assert!(contains(enc.as_bytes(), &core), "{align} {pre} {post}");
                }
            }
        }
    }

    #[test]
    fn url_encoded_forms() {
        let v = "p@ss w/rd+é!";
        let m = masker(&[v.as_bytes()]);
        for enc in [
            "p%40ss%20w%2Frd%2B%C3%A9%21", // RFC 3986, upper hex
            "p%40ss%20w%2frd%2b%c3%a9%21", // lower hex
            "p%40ss+w%2Frd%2B%C3%A9%21",   // form encoding
            "p%40ss+w%2frd%2b%c3%a9%21",   // form encoding, lower hex
            "p%40ss%20w%2Frd%2B%C3%A9!",   // encodeURIComponent
            "p%40ss%20w/rd%2B%C3%A9%21",   // Python quote()
        ] {
            assert_eq!(m.mask_str(&format!("?q={enc}&x=1")), "?q=***&x=1", "{enc}");
        }
    }

    #[test]
    fn pty_and_xtrace_forms() {
        let m = masker(&[b"line one\nline two", b"it's-secret"]);
        assert_eq!(m.mask(b"> line one\r\nline two\r\n"), b"> ***\r\n");
        assert_eq!(m.mask(b"+ echo 'it'\\''s-secret'"), b"+ echo '***'");
    }

    #[test]
    fn short_forms_are_not_added() {
        // Raw is always a pattern; here every other form is either equal or long enough.
        let m = masker(&[b"abcd"]);
        assert!(m.patterns.iter().all(|p| p.len() >= MIN_MASK_LEN));
        // Unreserved-only value: no URL or JSON form distinct from raw.
        let m = masker(&[b"plain_value"]);
        assert!(m
            .patterns
            .iter()
            .all(|p| p.as_slice() == b"plain_value" || !p.contains(&b'%')));
    }

    #[test]
    fn short_value_withholds_everything() {
        let m = Arc::new(masker(&[b"long enough", b"abc"]));
        assert!(m.withholds());
        let out = m.mask(b"abc and long enough");
        assert_eq!(out, WITHHELD_NOTICE.as_bytes());
        assert!(WITHHELD_NOTICE.contains(&MIN_MASK_LEN.to_string()));
        assert_eq!(m.mask_str("abc"), WITHHELD_NOTICE);

        let mut c = LogCapture::new(m.clone(), 1 << 20);
        c.push(b"abc ");
        c.push(b"xyz");
        assert_eq!(c.total_bytes(), 7);
        let log = c.finish();
        assert!(log.withheld());
        assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());

        let mut out = Vec::new();
        let mut s = MaskStream::new(m);
        s.push(b"abc", &mut out);
        assert!(out.is_empty());
        s.finish(&mut out);
        assert_eq!(out, WITHHELD_NOTICE.as_bytes());
    }

    #[test]
    fn stream_masks_values_split_byte_by_byte() {
        let m = Arc::new(masker(&[b"hunter2", b"another-secret"]));
        let input = b"a hunter2 b another-secret c hunter2another-secret";
        let mut out = Vec::new();
        let mut s = MaskStream::new(m.clone());
        for b in input.iter() {
            s.push(std::slice::from_ref(b), &mut out);
            assert!(s.held_len() < m.max_pattern_len());
        }
        s.finish(&mut out);
        assert_eq!(out, m.mask(input));
        assert_eq!(out, b"a *** b *** c ***");
    }

    #[test]
    fn stream_holds_back_little_over_a_long_input() {
        let m = Arc::new(masker(&[b"needle-in-haystack"]));
        let mut s = MaskStream::new(m.clone());
        let mut block = vec![b'.'; 65_537];
        block[30_000..30_018].copy_from_slice(b"needle-in-haystack");
        let mut total = 0;
        for _ in 0..32 {
            let mut out = Vec::new();
            s.push(&block, &mut out);
            total += out.len();
            assert!(s.held_len() < m.max_pattern_len());
            assert!(s.state.as_ref().unwrap().held.capacity() <= m.max_pattern_len());
            assert!(s.state.as_ref().unwrap().spans.len() <= STEP);
        }
        let mut out = Vec::new();
        s.finish(&mut out);
        total += out.len();
        assert_eq!(total, 32 * (65_537 - 18 + 3));
    }

    #[test]
    fn cap_keeps_prefix_and_counts_dropped() {
        let m = masker(&[b"hunter2"]);
        let log = capture(m, 10, &[b"0123456789", b"abcdefghij"]);
        assert!(log.is_cut());
        assert_eq!(log.cut_bytes(), 10);
        assert_eq!(log.as_bytes(), "0123456789\n[… 10 bytes cut]\n".as_bytes());
    }

    #[test]
    fn cap_never_splits_a_marker() {
        let m = masker(&[b"hunter2"]);
        let log = capture(m, 10, &[b"01234567hu", b"nter2 and more"]);
        assert_eq!(
            log.as_bytes(),
            "01234567\n[… 16 bytes cut]\n".as_bytes(),
            "{:?}",
            String::from_utf8_lossy(log.as_bytes())
        );
    }

    #[test]
    fn cut_log_never_ends_with_the_start_of_a_value() {
        // "hun" is final (not followed by "ter2") but looks like the start of the value.
        let m = masker(&[b"hunter2"]);
        let log = capture(m, 7, &[b"0123hun", b"gry and long"]);
        assert_eq!(log.as_bytes(), "0123\n[… 15 bytes cut]\n".as_bytes());
    }

    #[test]
    fn no_cut_when_output_fits_exactly() {
        let m = masker(&[b"hunter2"]);
        let log = capture(m, 5, &[b"x", b"hunter2", b"y"]);
        assert!(!log.is_cut());
        assert_eq!(log.as_bytes(), b"x***y");
    }

    #[test]
    fn memory_stays_bounded_over_200_mib() {
        let cap = 64 * 1024;
        let m = Arc::new(masker(&[
            b"a-value-that-is-fairly-long-0123456789",
            b"hunter2",
        ]));
        let bound = cap + m.max_pattern_len();
        let mut c = LogCapture::new(m, cap);
        let mut chunk = vec![b'x'; 64 * 1024];
        chunk[100..107].copy_from_slice(b"hunter2");
        let pushes = 200 * 16;
        for i in 0..pushes {
            c.push(&chunk);
            assert!(
                c.buffered_bytes() <= bound,
                "push {i}: {}",
                c.buffered_bytes()
            );
            assert!(c.out.len() <= cap);
        }
        assert!(c.is_cut());
        assert_eq!(c.total_bytes(), 200 << 20);
        let log = c.finish();
        assert!(log.as_bytes().len() <= cap + 40);
        let kept = log.as_bytes().len() - format!("\n[… {} bytes cut]\n", log.cut_bytes()).len();
        // Every kept input byte is either raw ('x') or inside a masked run.
        let kept_input = kept as u64
            + 4 * log.as_bytes()[..kept]
                .windows(3)
                .filter(|w| w == b"***")
                .count() as u64;
        assert_eq!(kept_input + log.cut_bytes(), 200 << 20);
    }

    #[test]
    fn remask_masks_the_secret_learned_later() {
        let vars = Arc::new(masker(&[b"user-name"]));
        let log_text: &[u8] = b"login user-name\ngot s3cr3t-value\n";
        let mut log = capture(masker(&[b"user-name"]), 1 << 20, &[log_text]);
        assert_eq!(log.as_bytes(), b"login ***\ngot s3cr3t-value\n");
        log.remask(&vars.extended([b"s3cr3t-value".as_slice()]));
        assert_eq!(log.as_bytes(), b"login ***\ngot ***\n");
        assert!(!log.is_cut());
    }

    #[test]
    fn remask_finds_a_secret_containing_a_variable() {
        let vars = Arc::new(masker(&[b"alice"]));
        let mut c = LogCapture::new(vars.clone(), 1 << 20);
        c.push(b"token alice:pa55word!\n");
        let mut log = c.finish();
        assert_eq!(log.as_bytes(), b"token ***:pa55word!\n");
        log.remask(&vars.extended([b"alice:pa55word".as_slice()]));
        assert_eq!(log.as_bytes(), b"token ***!\n");
    }

    #[test]
    fn remask_of_a_cut_log_drops_a_trailing_partial_secret() {
        let vars = Arc::new(masker(&[b"user-name"]));
        let mut c = LogCapture::new(vars.clone(), 12);
        c.push(b"secret: s3cr3t-value and more");
        let mut log = c.finish();
        assert!(log.is_cut());
        assert_eq!(
            log.as_bytes(),
            "secret: s3cr\n[… 17 bytes cut]\n".as_bytes()
        );
        log.remask(&vars.extended([b"s3cr3t-value".as_slice()]));
        assert_eq!(log.as_bytes(), "secret: \n[… 21 bytes cut]\n".as_bytes());
        assert_eq!(log.cut_bytes(), 21);
    }

    #[test]
    fn remask_with_a_short_secret_withholds() {
        let vars = Arc::new(masker(&[b"user-name"]));
        let mut log = capture(masker(&[b"user-name"]), 100, &[b"out: ab"]);
        log.remask(&vars.extended([b"ab".as_slice()]));
        assert!(log.withheld());
        assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());
        // And stays withheld.
        log.remask(&vars);
        assert_eq!(log.as_bytes(), WITHHELD_NOTICE.as_bytes());
    }

    #[test]
    fn remask_of_default_log_is_harmless() {
        let mut log = CapturedLog::default();
        log.remask(&masker(&[b"secret"]));
        assert_eq!(log.as_bytes(), b"");
        assert!(!log.is_cut() && !log.withheld());
    }

    #[test]
    fn tail_avoids_partial_markers_and_characters() {
        let log = capture(masker(&[b"hunter2"]), 100, &["é-hunter2-end".as_bytes()]);
        assert_eq!(log.as_bytes(), "é-***-end".as_bytes());
        assert_eq!(log.tail(5), "-end");
        assert_eq!(log.tail(6), "-end");
        assert_eq!(log.tail(7), "***-end");
        assert_eq!(log.tail(100), "é-***-end");
        assert_eq!(log.tail(10), "é-***-end");
        assert_eq!(log.tail(9), "-***-end");
        assert_eq!(log.tail(0), "");
    }

    #[test]
    fn debug_never_shows_values() {
        let secret: &[u8] = b"hunter2-very-secret";
        let m = Arc::new(masker(&[secret]));
        let dbg = format!("{m:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert!(!dbg.contains("aHVudGVy"), "{dbg}");

        let mut c = LogCapture::new(m.clone(), 1 << 20);
        c.push(b"unknown-secret-in-flight hunter2-very-sec");
        let dbg = format!("{c:?}");
        assert!(
            !dbg.contains("hunter2") && !dbg.contains("unknown"),
            "{dbg}"
        );
        let log = c.finish();
        let dbg = format!("{log:?}");
        assert!(!dbg.contains("unknown"), "{dbg}");
        let mut s = MaskStream::new(m);
        s.push(b"hunter2-very-sec", &mut Vec::new());
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
    }

    #[test]
    fn masker_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Masker>();
        check::<Arc<Masker>>();
        check::<LogCapture>();
        check::<CapturedLog>();
    }

    #[test]
    fn extended_keeps_old_values() {
        let m = masker(&[b"first-value"]).extended([b"second-value".as_slice(), b""]);
        assert_eq!(m.mask(b"first-value second-value"), b"*** ***");
        assert!(!m.withholds());
        assert!(masker(&[b"abc"]).extended([]).withholds());
    }

    #[test]
    fn mask_str_is_lossy_only_where_needed() {
        let m = masker(&["wörd".as_bytes(), b"\xc3\xa9t\xc3"]);
        assert_eq!(m.mask_str("a wörd b"), "a *** b");
    }

    #[test]
    fn a_megabyte_with_hundreds_of_values_is_fast_enough() {
        let values: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("value-{i:04}-secret/+").into_bytes())
            .collect();
        let m = Masker::new(values.iter().map(|v| v.as_slice()));
        let mut input = Vec::new();
        while input.len() < 1 << 20 {
            input.extend_from_slice(b"some ordinary log line with value-0042-secret/+ inside\n");
        }
        let start = std::time::Instant::now();
        let out = m.mask(&input);
        let mut streamed = Vec::new();
        let mut s = MaskStream::new(Arc::new(m));
        for ch in input.chunks(4096) {
            s.push(ch, &mut streamed);
        }
        s.finish(&mut streamed);
        assert_eq!(out, streamed);
        assert!(!contains(&out, b"value-0042"));
        // Generous: debug builds on a busy 2-core machine.
        assert!(start.elapsed() < std::time::Duration::from_secs(20));
    }
}
