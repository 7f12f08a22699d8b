//! Scanning a stream in pieces: both channels, candidates of long forms kept as runs and
//! decided by prefix hashes, occurrences reported in output offsets.

use std::collections::VecDeque;

use aho_corasick::automaton::{Automaton, StateID};
use aho_corasick::Anchored;
use zeroize::Zeroizing;

use super::hash::{addmod, hasher, mulmod, submod};
use super::{is_break, Chan, Engine, ANCHOR, MAX_BREAK_RUN, STEP};

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
    /// Any other prefix hash in `buf` costs at most one multiplication from these. Hashes
    /// of output not yet masked: wiped too.
    ck: Zeroizing<Vec<u64>>,
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
                ck: Zeroizing::new(vec![0]),
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
pub(in crate::mask) struct Scanner {
    chans: [Option<ChanScan>; 2],
    map: BreakMap,
    /// Length of the current run of `\r`/`\n` bytes.
    break_run: usize,
    /// The current piece as the base64 channel sees it.
    scratch: Zeroizing<Vec<u8>>,
    consumed: u64,
}

impl Scanner {
    pub(in crate::mask) fn new(e: &Engine) -> Scanner {
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
    pub(in crate::mask) fn scan(&mut self, e: &Engine, piece: &[u8], spans: &mut Vec<(u64, u64)>) {
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
    pub(in crate::mask) fn live_from(&self, e: &Engine) -> u64 {
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
    pub(in crate::mask) fn candidate_runs(&self) -> usize {
        self.chans
            .iter()
            .flatten()
            .map(|c| c.runs.iter().map(VecDeque::len).sum::<usize>())
            .sum()
    }

    /// Earliest output offset of an undecided long-form candidate.
    pub(super) fn live_candidates_from(&self) -> u64 {
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
