//! The matching engine: finds every occurrence of every form in a stream, in time linear
//! in the stream and memory linear in the forms, however long they are.
//!
//! Two channels, each with its own set of forms (see `forms`):
//! - **raw** sees the output as written;
//! - **base64** sees it with line breaks removed: the first [`MAX_BREAK_RUN`] bytes of a run
//!   of `\r`/`\n` vanish (so base64 wrapped at any width, with `\n` or `\r\n`, reads as
//!   one line), and each further one reads as `\n` (which no base64 form contains, and
//!   which keeps the output an occurrence spans below 4 × its channel length). Occurrences
//!   found there are mapped back to output offsets, line breaks inside them included.
//!
//! In each channel:
//! - a form of at most [`ANCHOR`] bytes is a pattern in an Aho-Corasick automaton (a
//!   contiguous NFA, stepped a byte at a time so that streaming needs no look-ahead, and
//!   skipping ahead in its start state to a byte that can begin a pattern);
//! - a longer form contributes only its first [`ANCHOR`] bytes (its anchor) to the
//!   automaton, plus its length and a polynomial hash (mod 2^61 − 1, random base). Each
//!   occurrence of the anchor makes a candidate; when the stream reaches the candidate's end
//!   the hash of the text in between, from prefix hashes of the stream, decides. Equal text
//!   always has an equal hash, so no occurrence is missed; a collision (probability about
//!   length / 2^61) would only mask text that is not a value.
//!
//! Candidates of one form are kept as runs: overlapping anchor occurrences closer than half
//! an anchor are a repetition of the anchor's period, so a run (start, count) with the
//! period's hash stands for all of them. Live candidates therefore take O(held bytes /
//! [`ANCHOR`]) memory per form, even for a stream of one repeated character.
//!
//! No form is stored whole once built: building costs one form's size at a time on top of
//! the value, and the engine keeps O([`ANCHOR`]) bytes per form.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::OnceLock;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};
use zeroize::{Zeroize, Zeroizing};

use super::forms::{Channel, Gen};
use super::stream::StreamState;
use super::{Masker, Pattern};

/// Forms up to this long are matched whole by the automaton; longer ones by their first
/// `ANCHOR` bytes and a hash.
pub(super) const ANCHOR: usize = 32;

/// The longest run of `\r`/`\n` bytes the base64 channel skips; a longer one breaks a match.
pub(super) const MAX_BREAK_RUN: usize = 3;

/// How many bytes are scanned before candidates are checked and output finalised, so that
/// per-piece work (and the prefix hashes kept for it) stays small whatever the chunk size.
pub(super) const STEP: usize = 1024;

// ---------------------------------------------------------------------------------------
// Hashing mod 2^61 − 1
// ---------------------------------------------------------------------------------------

const P: u64 = (1 << 61) - 1;

#[inline]
fn reduce(x: u64) -> u64 {
    let r = (x & P) + (x >> 61);
    if r >= P {
        r - P
    } else {
        r
    }
}

#[inline]
fn mulmod(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    reduce((x as u64 & P) + (x >> 61) as u64)
}

#[inline]
fn addmod(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P {
        s - P
    } else {
        s
    }
}

#[inline]
fn submod(a: u64, b: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + P - b
    }
}

/// Polynomial hashing with one random base per process: h(s) = Σ s[i]·B^(len−1−i).
struct Hasher {
    base: u64,
    /// B^0 ..= B^8.
    pows: [u64; 9],
    /// `table[k][x]` = x·B^k, so that eight bytes cost one multiplication.
    table: Box<[[u64; 256]; 8]>,
}

impl Hasher {
    fn new(base: u64) -> Hasher {
        let mut table = Box::new([[0u64; 256]; 8]);
        let mut pows = [1u64; 9];
        for k in 1..9 {
            pows[k] = mulmod(pows[k - 1], base);
        }
        for (row, &pow) in table.iter_mut().zip(&pows) {
            for (x, slot) in row.iter_mut().enumerate() {
                *slot = mulmod(x as u64, pow);
            }
        }
        Hasher { base, pows, table }
    }

    /// The hash of (the text hashed to `h`) followed by `bytes`.
    fn extend(&self, h: u64, bytes: &[u8]) -> u64 {
        if bytes.len() < 512 {
            return self.extend_serial(h, bytes);
        }
        // Four independent chains over the four quarters hide the multiplication's
        // latency; then h·B^(4q) + Σ lane_k·B^((3−k)q).
        let q = bytes.len() / 4 / 8 * 8;
        let mut lanes = [0u64; 4];
        for i in (0..q).step_by(8) {
            for (k, lane) in lanes.iter_mut().enumerate() {
                let c = &bytes[k * q + i..k * q + i + 8];
                let mut s = 0u64;
                for (j, &x) in c.iter().enumerate() {
                    s += self.table[7 - j][usize::from(x)];
                }
                *lane = addmod(mulmod(*lane, self.pows[8]), reduce(s));
            }
        }
        let bq = self.pow(q as u64);
        let mut h = h;
        for lane in lanes {
            h = addmod(mulmod(h, bq), lane);
        }
        self.extend_serial(h, &bytes[4 * q..])
    }

    fn extend_serial(&self, mut h: u64, bytes: &[u8]) -> u64 {
        // Up to eight bytes per multiplication: h·B^n + Σ x_k·B^(n−1−k). Eight values
        // below P sum to less than 2^64.
        for c in bytes.chunks(8) {
            let n = c.len();
            let mut s = 0u64;
            for (k, &x) in c.iter().enumerate() {
                s += self.table[n - 1 - k][usize::from(x)];
            }
            h = addmod(mulmod(h, self.pows[n]), reduce(s));
        }
        h
    }

    fn pow(&self, mut n: u64) -> u64 {
        let (mut acc, mut b) = (1, self.base);
        while n > 0 {
            if n & 1 == 1 {
                acc = mulmod(acc, b);
            }
            b = mulmod(b, b);
            n >>= 1;
        }
        acc
    }
}

fn hasher() -> &'static Hasher {
    static HASHER: OnceLock<Hasher> = OnceLock::new();
    HASHER.get_or_init(|| {
        // A base unknown to whoever writes the output makes collisions unplannable; they
        // could only cause over-masking anyway.
        let seed = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
        Hasher::new(256 + seed % (P - 512))
    })
}

// ---------------------------------------------------------------------------------------
// The built engine
// ---------------------------------------------------------------------------------------

/// A form longer than [`ANCHOR`]: everything needed to confirm a candidate.
struct LongForm {
    len: u64,
    hash: u64,
    /// B^len.
    pow_len: u64,
    /// Smallest period of the anchor if at most half of it, else 0 (runs stay single).
    period: u64,
    /// B^period and the hash of the anchor's first `period` bytes.
    pow_period: u64,
    period_hash: u64,
}

impl Drop for LongForm {
    // The hashes are derived from secrets.
    fn drop(&mut self) {
        self.hash.zeroize();
        self.period_hash.zeroize();
    }
}

/// An Aho-Corasick automaton with standard (all matches) semantics, unanchored: a
/// contiguous NFA, whose size is linear in the patterns' (a DFA was no faster here once
/// the start state skips ahead, and is slower to build).
struct Ac(NFA);

impl Ac {
    fn build(pats: &[Pattern]) -> Result<Ac, TooManyPatterns> {
        NFA::builder()
            .match_kind(MatchKind::Standard)
            .prefilter(false)
            .build(pats.iter().map(|p| p.as_slice()))
            .map(Ac)
            .map_err(|_| TooManyPatterns)
    }

    fn memory_usage(&self) -> usize {
        self.0.memory_usage()
    }

    fn start(&self) -> StateID {
        // An unanchored start state exists: the NFA is built with one.
        self.0.start_state(Anchored::No).unwrap_or(StateID::ZERO)
    }
}

/// One channel's automaton and long forms.
struct Chan {
    ac: Ac,
    /// The automaton's unanchored start state, and the bytes that leave it.
    start: StateID,
    first: [bool; 256],
    /// Longest automaton pattern.
    ac_max: usize,
    /// The automaton's patterns by id (forms and anchors, at most [`ANCHOR`] bytes each),
    /// for the exact partial-match check of a cut log.
    pats: Vec<Pattern>,
    /// Per pattern id: its length if it is a form itself, else 0.
    short_len: Vec<u32>,
    /// Per pattern id: the range of `anchor_forms` whose anchor it is.
    anchored: Vec<(u32, u32)>,
    anchor_forms: Vec<u32>,
    long: Vec<LongForm>,
    /// Longest form.
    max_len: usize,
}

/// Every form of every value, ready to match. Immutable and `Send + Sync`.
pub(super) struct Engine {
    chans: [Option<Chan>; 2],
    forms: usize,
}

/// The automaton could not be built (too many patterns): nothing can be masked.
#[derive(Debug)]
pub(super) struct TooManyPatterns;

/// A pattern as a map key, wiped on drop.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key(Vec<u8>);

impl Drop for Key {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

#[derive(Default)]
struct ChanBuilder {
    /// Automaton patterns: whether each is a form itself, and the long forms it anchors.
    pats: BTreeMap<Key, (bool, Vec<u32>)>,
    long: Vec<LongForm>,
    seen_long: HashSet<(u64, u64)>,
    max_len: usize,
}

/// What the engine keeps of a form: its length, hash and first [`ANCHOR`] bytes (all of
/// it when that short). Computed from the form's pieces without building it.
pub(super) struct Digest {
    len: u64,
    /// Hash of the bytes before `buf`.
    hash: u64,
    head: Zeroizing<Vec<u8>>,
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
    pub(super) fn of(gen: Gen<'_>) -> Digest {
        let mut d = Digest::new();
        let hs = hasher();
        gen(&mut |p| d.feed(hs, p));
        d.finish(hs);
        d
    }

    /// The digest of the form `gen` produces, as `m` masks it.
    pub(super) fn masked(m: &Masker, gen: Gen<'_>) -> Digest {
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
    pub(super) fn followed_by(&self, suffix: &[u8]) -> Digest {
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

    pub(super) fn len(&self) -> usize {
        self.len as usize
    }
}

impl Drop for Digest {
    fn drop(&mut self) {
        self.hash.zeroize();
    }
}

impl ChanBuilder {
    fn add(&mut self, hs: &Hasher, d: &Digest) {
        self.max_len = self.max_len.max(d.len());
        if d.len() <= ANCHOR {
            self.pats.entry(Key(d.head.to_vec())).or_default().0 = true;
            return;
        }
        if !self.seen_long.insert((d.len, d.hash)) {
            // The same form (or a collision, which would match the same text anyway).
            return;
        }
        let anchor = &d.head[..ANCHOR];
        let p = smallest_period(anchor);
        let period = if p <= ANCHOR / 2 { p } else { 0 };
        let id = self.long.len() as u32;
        self.long.push(LongForm {
            len: d.len,
            hash: d.hash,
            pow_len: hs.pow(d.len),
            period: period as u64,
            pow_period: hs.pow(period as u64),
            period_hash: hs.extend(0, &anchor[..period]),
        });
        self.pats
            .entry(Key(anchor.to_vec()))
            .or_default()
            .1
            .push(id);
    }

    fn build(self) -> Result<Option<Chan>, TooManyPatterns> {
        if self.pats.is_empty() {
            return Ok(None);
        }
        let mut pats = Vec::with_capacity(self.pats.len());
        let mut short_len = Vec::with_capacity(self.pats.len());
        let mut anchored = Vec::with_capacity(self.pats.len());
        let mut anchor_forms = Vec::new();
        for (mut key, (short, forms)) in self.pats {
            short_len.push(if short { key.0.len() as u32 } else { 0 });
            let from = anchor_forms.len() as u32;
            anchor_forms.extend(forms);
            anchored.push((from, anchor_forms.len() as u32));
            pats.push(Zeroizing::new(std::mem::take(&mut key.0)));
        }
        let ac = Ac::build(&pats)?;
        let start = ac.start();
        let mut first = [false; 256];
        for p in &pats {
            first[usize::from(p[0])] = true;
        }
        let ac_max = pats.iter().map(|p| p.len()).max().unwrap_or(0);
        Ok(Some(Chan {
            ac,
            start,
            first,
            ac_max,
            pats,
            short_len,
            anchored,
            anchor_forms,
            long: self.long,
            max_len: self.max_len,
        }))
    }
}

/// Smallest period of `s` (non-empty): the least p with s[i] = s[i + p] throughout.
fn smallest_period(s: &[u8]) -> usize {
    // Knuth–Morris–Pratt failure function: the longest proper border of s.
    let mut fail = vec![0usize; s.len()];
    let mut k = 0;
    for i in 1..s.len() {
        while k > 0 && s[i] != s[k] {
            k = fail[k - 1];
        }
        if s[i] == s[k] {
            k += 1;
        }
        fail[i] = k;
    }
    s.len() - fail[s.len() - 1]
}

impl Engine {
    /// Build over the given forms.
    pub(super) fn build(forms: &[(Channel, Digest)]) -> Result<Engine, TooManyPatterns> {
        let hs = hasher();
        let mut chans: [ChanBuilder; 2] = Default::default();
        for (ch, d) in forms {
            chans[*ch as usize].add(hs, d);
        }
        let forms = chans
            .iter()
            .map(|c| c.pats.values().filter(|p| p.0).count() + c.long.len())
            .sum();
        let [raw, b64] = chans;
        Ok(Engine {
            chans: [raw.build()?, b64.build()?],
            forms,
        })
    }

    /// Number of distinct forms.
    pub(super) fn form_count(&self) -> usize {
        self.forms
    }

    /// The most output bytes one occurrence can span: a base64 form's line breaks count.
    pub(super) fn max_span(&self) -> usize {
        let raw = self.chans[0].as_ref().map_or(0, |c| c.max_len);
        let b64 = self.chans[1]
            .as_ref()
            .map_or(0, |c| c.max_len * (MAX_BREAK_RUN + 1));
        raw.max(b64)
    }

    /// A searcher for any automaton pattern of either channel (forms up to [`ANCHOR`]
    /// bytes and anchors): text without one, and without line breaks, has no occurrence.
    /// `None` if it cannot be built.
    pub(super) fn any_pattern_finder(&self) -> Option<aho_corasick::AhoCorasick> {
        let pats = self.chans.iter().flatten().flat_map(|c| c.pats.iter());
        let pats: Vec<&[u8]> = pats.map(|p| p.as_slice()).collect();
        // A DFA searches fastest; it is temporary and its size is bounded by the
        // library's limits (it falls back to what they allow).
        let mut b = aho_corasick::AhoCorasick::builder();
        b.match_kind(MatchKind::Standard);
        b.kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(&pats)
            .or_else(|_| b.kind(None).build(&pats))
            .ok()
    }

    /// Approximate heap bytes held.
    pub(super) fn memory_usage(&self) -> usize {
        self.chans
            .iter()
            .flatten()
            .map(|c| {
                c.ac.memory_usage()
                    + c.pats.iter().map(|p| p.len() + 24).sum::<usize>()
                    + c.long.len() * std::mem::size_of::<LongForm>()
                    + c.anchored.len() * 12
                    + c.anchor_forms.len() * 4
            })
            .sum()
    }

    /// How many bytes at the end of `text` could begin an occurrence still in progress:
    /// the longest suffix that is a proper prefix of a form up to [`ANCHOR`] bytes or of an
    /// anchor, or else the start of the earliest anchor occurrence whose form would end
    /// past the text. What a cut log must drop, so it never ends with the start of a value.
    pub(super) fn live_tail(&self, text: &[u8]) -> usize {
        let mut sc = Scanner::new(self);
        let mut spans = Vec::new();
        for piece in text.chunks(STEP) {
            sc.scan(self, piece, &mut spans);
            spans.clear();
        }
        let len = text.len() as u64;
        let mut from = sc.live_candidates_from(self);
        if let Some(ch) = &self.chans[0] {
            from = from.min(len - partial_prefix_len(&ch.pats, text) as u64);
        }
        if let Some(ch) = &self.chans[1] {
            let (tail, at) = base64_channel_tail(text, ANCHOR);
            let k = partial_prefix_len(&ch.pats, &tail);
            if k > 0 {
                from = from.min(at[tail.len() - k]);
            }
        }
        (len - from.min(len)) as usize
    }
}

/// Longest suffix of `text` that is a proper prefix of one of `pats`.
fn partial_prefix_len(pats: &[Pattern], text: &[u8]) -> usize {
    let mut best = 0;
    for p in pats {
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

/// The last (up to) `n` bytes of `text` as the base64 channel sees them, with the output
/// offset of each.
fn base64_channel_tail(text: &[u8], n: usize) -> (Zeroizing<Vec<u8>>, Vec<u64>) {
    let mut bytes = Zeroizing::new(Vec::with_capacity(n));
    let mut at = Vec::with_capacity(n);
    let mut i = text.len();
    while i > 0 && bytes.len() < n {
        if is_break(text[i - 1]) {
            let end = i;
            while i > 0 && is_break(text[i - 1]) {
                i -= 1;
            }
            // Past the first MAX_BREAK_RUN, each break byte reaches the channel as `\n`.
            for j in (i + MAX_BREAK_RUN..end).rev() {
                if bytes.len() == n {
                    break;
                }
                bytes.push(b'\n');
                at.push(j as u64);
            }
        } else {
            i -= 1;
            bytes.push(text[i]);
            at.push(i as u64);
        }
    }
    bytes.reverse();
    at.reverse();
    (bytes, at)
}

#[inline]
fn is_break(b: u8) -> bool {
    b == b'\n' || b == b'\r'
}

// ---------------------------------------------------------------------------------------
// Scanning
// ---------------------------------------------------------------------------------------

/// Candidates of one long form at `start`, `start + period`, … (`count` of them); `h` is
/// the stream's prefix hash at `start`.
#[derive(Clone, Copy)]
struct Run {
    start: u64,
    count: u64,
    h: u64,
}

/// Prefix hashes of a channel around the current piece.
struct PrefixHashes {
    /// The channel bytes `[buf_at, pos)`: the current piece plus [`ANCHOR`] + 8 before it
    /// (they may be secret: wiped on drop).
    buf: Zeroizing<Vec<u8>>,
    buf_at: u64,
    /// Prefix hashes at multiples of 8: `ck[i]` = H(`ck_at` + 8i), up to the piece's end.
    /// Any other prefix hash in `buf` costs at most one multiplication from these.
    ck: Vec<u64>,
    ck_at: u64,
}

impl PrefixHashes {
    /// Take the piece's channel bytes into `buf` and extend the checkpoints over them.
    fn push(&mut self, bytes: &[u8]) {
        let keep = ANCHOR + 8;
        if self.buf.len() > keep {
            let drop = self.buf.len() - keep;
            self.buf.drain(..drop);
            self.buf_at += drop as u64;
        }
        self.buf.extend_from_slice(bytes);
        let hs = hasher();
        let end = self.buf_at + self.buf.len() as u64;
        let mut c = self.ck_at + 8 * (self.ck.len() as u64 - 1);
        let mut h = *self.ck.last().unwrap_or(&0);
        while c + 8 <= end {
            let at = (c - self.buf_at) as usize;
            h = hs.extend_serial(h, &self.buf[at..at + 8]);
            self.ck.push(h);
            c += 8;
        }
        // Keep the checkpoints from the one at or below `buf_at` on.
        let first = (self.buf_at & !7).max(self.ck_at);
        let drop = ((first - self.ck_at) / 8) as usize;
        self.ck.drain(..drop);
        self.ck_at = first;
    }

    /// The channel's prefix hash at `x` (within `buf`).
    fn at(&self, x: u64) -> u64 {
        let k = x & !7;
        let h = self.ck[((k - self.ck_at) / 8) as usize];
        let from = (k - self.buf_at) as usize;
        hasher().extend_serial(h, &self.buf[from..from + (x - k) as usize])
    }
}

/// Scanning state for one channel; positions are in channel bytes.
struct ChanScan {
    sid: StateID,
    pos: u64,
    /// Only with long forms.
    hashes: PrefixHashes,
    /// Candidate runs per long form, and the forms that have any.
    runs: Vec<VecDeque<Run>>,
    active: Vec<u32>,
}

impl ChanScan {
    fn new(ch: &Chan) -> ChanScan {
        ChanScan {
            sid: ch.start,
            pos: 0,
            hashes: PrefixHashes {
                buf: Zeroizing::new(Vec::new()),
                buf_at: 0,
                ck: vec![0],
                ck_at: 0,
            },
            runs: (0..ch.long.len()).map(|_| VecDeque::new()).collect(),
            active: Vec::new(),
        }
    }

    /// Consume `bytes` (a piece); `found(start, end)` gets each short form ending in them.
    /// The state and position stay in registers between matches; in the start state, the
    /// loop skips to the next byte that can begin a pattern (the automaton would stay
    /// where it is on any other).
    #[inline]
    fn run<A: Automaton>(
        &mut self,
        ac: &A,
        ch: &Chan,
        bytes: &[u8],
        found: &mut impl FnMut(u64, u64),
    ) {
        if !ch.long.is_empty() {
            self.hashes.push(bytes);
        }
        let mut sid = self.sid;
        let mut i = 0;
        while i < bytes.len() {
            if sid == ch.start {
                match bytes[i..].iter().position(|&b| ch.first[usize::from(b)]) {
                    Some(n) => i += n,
                    None => break,
                }
            }
            sid = ac.next_state(Anchored::No, sid, bytes[i]);
            i += 1;
            if ac.is_special(sid) && ac.is_match(sid) {
                self.sid = sid;
                self.pos += i as u64;
                self.matched(ac, ch, found);
                self.pos -= i as u64;
            }
        }
        self.sid = sid;
        self.pos += bytes.len() as u64;
    }

    #[cold]
    fn matched<A: Automaton>(&mut self, ac: &A, ch: &Chan, found: &mut impl FnMut(u64, u64)) {
        let mut longest = 0;
        for i in 0..ac.match_len(self.sid) {
            let pid = ac.match_pattern(self.sid, i).as_usize();
            longest = longest.max(ch.short_len[pid]);
            let (a, b) = ch.anchored[pid];
            for &f in &ch.anchor_forms[a as usize..b as usize] {
                self.candidate(ch, f as usize, self.pos - ANCHOR as u64);
            }
        }
        if longest > 0 {
            found(self.pos - u64::from(longest), self.pos);
        }
    }

    fn candidate(&mut self, ch: &Chan, f: usize, start: u64) {
        let h = self.hashes.at(start);
        let period = ch.long[f].period;
        let runs = &mut self.runs[f];
        if let Some(r) = runs.back_mut() {
            if period != 0 && start == r.start + r.count * period {
                r.count += 1;
                return;
            }
        }
        if runs.is_empty() {
            self.active.push(f as u32);
        }
        runs.push_back(Run { start, count: 1, h });
    }

    /// After a piece: decide every candidate whose end has been reached.
    fn settle(&mut self, ch: &Chan, found: &mut impl FnMut(u64, u64)) {
        let mut k = 0;
        while k < self.active.len() {
            let f = self.active[k] as usize;
            let form = &ch.long[f];
            let runs = &mut self.runs[f];
            while let Some(r) = runs.front_mut() {
                let due = r.start + form.len;
                if due > self.pos {
                    break;
                }
                let hd = self.hashes.at(due);
                if submod(hd, mulmod(r.h, form.pow_len)) == form.hash {
                    found(r.start, due);
                }
                if r.count > 1 {
                    r.h = addmod(mulmod(r.h, form.pow_period), form.period_hash);
                    r.start += form.period;
                    r.count -= 1;
                } else {
                    runs.pop_front();
                }
            }
            if runs.is_empty() {
                self.active.swap_remove(k);
            } else {
                k += 1;
            }
        }
    }

    /// Earliest channel position where a candidate is still undecided.
    fn live_candidates_from(&self) -> u64 {
        self.active
            .iter()
            .filter_map(|&f| self.runs[f as usize].front().map(|r| r.start))
            .min()
            .unwrap_or(self.pos)
    }

    /// Earliest channel position where an occurrence not yet reported may start.
    fn live_from(&self, ch: &Chan) -> u64 {
        let partial = self.pos.saturating_sub(ch.ac_max as u64 - 1);
        partial.min(self.live_candidates_from())
    }
}

/// Maps base64-channel positions to output offsets: `(pos, delta)` means channel bytes
/// from `pos` on sit `delta` bytes further in the output (the line breaks skipped so far).
#[derive(Default)]
struct BreakMap {
    entries: VecDeque<(u64, u64)>,
    delta: u64,
}

impl BreakMap {
    /// A byte was skipped before channel position `pos`.
    fn skip(&mut self, pos: u64) {
        self.delta += 1;
        match self.entries.back_mut() {
            Some((p, d)) if *p == pos => *d = self.delta,
            _ => self.entries.push_back((pos, self.delta)),
        }
    }

    /// Output offset of channel position `pos` (for the next byte: the output offset of
    /// the next byte that reaches the channel, as far as known).
    fn orig(&self, pos: u64) -> u64 {
        let i = self.entries.partition_point(|e| e.0 <= pos);
        if i == 0 {
            pos
        } else {
            pos + self.entries[i - 1].1
        }
    }

    /// Forget what no position from `pos` on needs.
    fn prune(&mut self, pos: u64) {
        while self.entries.len() >= 2 && self.entries[1].0 <= pos {
            self.entries.pop_front();
        }
    }
}

/// Scanning state for a stream: both channels, in output offsets.
pub(super) struct Scanner {
    chans: [Option<ChanScan>; 2],
    map: BreakMap,
    /// Length of the current run of `\r`/`\n` bytes.
    break_run: usize,
    /// The current piece as the base64 channel sees it.
    scratch: Zeroizing<Vec<u8>>,
    consumed: u64,
}

impl Scanner {
    pub(super) fn new(e: &Engine) -> Scanner {
        Scanner {
            chans: [
                e.chans[0].as_ref().map(ChanScan::new),
                e.chans[1].as_ref().map(ChanScan::new),
            ],
            map: BreakMap::default(),
            break_run: 0,
            scratch: Zeroizing::new(Vec::with_capacity(STEP)),
            consumed: 0,
        }
    }

    /// Scan `piece` (at most [`STEP`] bytes for bounded work per call), then decide the
    /// candidates it completes. Every occurrence that ended in it is pushed onto `spans`
    /// as `[start, end)` output offsets, in no particular order.
    pub(super) fn scan(&mut self, e: &Engine, piece: &[u8], spans: &mut Vec<(u64, u64)>) {
        self.consumed += piece.len() as u64;
        if let (Some(ch), Some(st)) = (&e.chans[0], &mut self.chans[0]) {
            scan_raw(&ch.ac.0, ch, st, piece, spans);
        }
        if let (Some(ch), Some(st)) = (&e.chans[1], &mut self.chans[1]) {
            let (map, run, sc) = (&mut self.map, &mut self.break_run, &mut self.scratch);
            scan_base64(&ch.ac.0, ch, st, map, run, sc, piece, spans);
        }
    }

    /// Earliest output offset where an occurrence not yet reported may start: output
    /// before it is final.
    pub(super) fn live_from(&self, e: &Engine) -> u64 {
        let mut from = self.consumed;
        if let (Some(ch), Some(st)) = (&e.chans[0], &self.chans[0]) {
            from = from.min(st.live_from(ch));
        }
        if let (Some(ch), Some(st)) = (&e.chans[1], &self.chans[1]) {
            from = from.min(self.map.orig(st.live_from(ch)));
        }
        from
    }

    /// Candidate runs held, over both channels.
    #[cfg(test)]
    pub(super) fn candidate_runs(&self) -> usize {
        self.chans
            .iter()
            .flatten()
            .map(|c| c.runs.iter().map(VecDeque::len).sum::<usize>())
            .sum()
    }

    /// Earliest output offset of an undecided long-form candidate.
    fn live_candidates_from(&self, _e: &Engine) -> u64 {
        let mut from = self.consumed;
        if let Some(st) = &self.chans[0] {
            from = from.min(st.live_candidates_from());
        }
        if let Some(st) = &self.chans[1] {
            from = from.min(self.map.orig(st.live_candidates_from()));
        }
        from
    }
}

fn scan_raw<A: Automaton>(
    ac: &A,
    ch: &Chan,
    st: &mut ChanScan,
    piece: &[u8],
    spans: &mut Vec<(u64, u64)>,
) {
    let mut found = |s, e| spans.push((s, e));
    st.run(ac, ch, piece, &mut found);
    st.settle(ch, &mut found);
}

/// The base64 channel: the piece without the first [`MAX_BREAK_RUN`] bytes of each run of
/// line breaks, later ones read as `\n`.
#[allow(clippy::too_many_arguments)]
fn scan_base64<A: Automaton>(
    ac: &A,
    ch: &Chan,
    st: &mut ChanScan,
    map: &mut BreakMap,
    break_run: &mut usize,
    scratch: &mut Zeroizing<Vec<u8>>,
    piece: &[u8],
    spans: &mut Vec<(u64, u64)>,
) {
    scratch.clear();
    for &b in piece {
        if is_break(b) {
            *break_run += 1;
            if *break_run <= MAX_BREAK_RUN {
                map.skip(st.pos + scratch.len() as u64);
                continue;
            }
            scratch.push(b'\n');
        } else {
            *break_run = 0;
            scratch.push(b);
        }
    }
    let m = &*map;
    let mut found = |s, e: u64| spans.push((m.orig(s), m.orig(e - 1) + 1));
    st.run(ac, ch, scratch, &mut found);
    st.settle(ch, &mut found);
    map.prune(st.live_from(ch));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashing_is_consistent() {
        let hs = hasher();
        let text: Vec<u8> = (0..100u8).map(|i| i.wrapping_mul(37)).collect();
        let mut prefix = vec![0u64];
        for &b in &text {
            let h = *prefix.last().unwrap();
            prefix.push(addmod(mulmod(h, hs.base), u64::from(b)));
        }
        for s in 0..text.len() {
            for e in s..=text.len() {
                let direct = hs.extend(0, &text[s..e]);
                let windowed = submod(prefix[e], mulmod(prefix[s], hs.pow((e - s) as u64)));
                assert_eq!(direct, windowed, "{s}..{e}");
            }
        }
        assert_eq!(
            hs.extend(hs.extend(0, b"abc"), b"defghijklm"),
            hs.extend(0, b"abcdefghijklm")
        );
    }

    #[test]
    fn periods() {
        assert_eq!(smallest_period(b"aaaa"), 1);
        assert_eq!(smallest_period(b"abab"), 2);
        assert_eq!(smallest_period(b"abaab"), 3);
        assert_eq!(smallest_period(b"abcd"), 4);
    }

    #[test]
    fn base64_channel_tail_skips_short_breaks() {
        let (b, at) = base64_channel_tail(b"xYW\r\nJj\n\n\n\n\nZm", 7);
        assert_eq!(b.as_slice(), b"WJj\n\nZm");
        assert_eq!(at, vec![2, 5, 6, 10, 11, 12, 13]);
        let (b, _) = base64_channel_tail(b"ab\ncd", 10);
        assert_eq!(b.as_slice(), b"abcd");
    }
}
