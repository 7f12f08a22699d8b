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

mod digest;
mod hash;
mod scan;

use std::collections::{BTreeMap, HashSet};

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::nfa::contiguous::NFA;
use aho_corasick::{Anchored, MatchKind};
use zeroize::{Zeroize, Zeroizing};

use super::forms::Channel;
use super::Pattern;
use hash::{hasher, Hasher};

pub(super) use digest::Digest;
pub(super) use scan::Scanner;

/// Forms up to this long are matched whole by the automaton; longer ones by their first
/// `ANCHOR` bytes and a hash.
pub(super) const ANCHOR: usize = 32;

/// The longest run of `\r`/`\n` bytes the base64 channel skips; a longer one breaks a match.
pub(super) const MAX_BREAK_RUN: usize = 3;

/// How many bytes are scanned before candidates are checked and output finalised, so that
/// per-piece work (and the prefix hashes kept for it) stays small whatever the chunk size.
pub(super) const STEP: usize = 1024;

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
        let mut from = sc.live_candidates_from();
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

#[cfg(test)]
mod tests {
    use super::*;

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
