//! Masking of secret and variable values in script output, and capped log capture.
//!
//! This module owns everything that stands between a script's raw output and anything a
//! person or another system may see:
//! - [`Masker`]: an immutable set of values, expanded into the encoded forms a script is
//!   likely to print (`forms`: raw, per line, JSON, URL, bash-quoted, base64 at every
//!   alignment and any line wrapping), matched by `engine` in time linear in the output and
//!   memory linear in the values, however long they are;
//! - [`MaskStream`] (`stream`): the same masking over a stream cut into arbitrary chunks,
//!   holding back only what an occurrence in progress could cover, with output identical
//!   to whole-buffer masking;
//! - [`LogCapture`] / [`CapturedLog`] (`capture`): bounded capture of one output stream (at
//!   most `cap` masked bytes are kept, the rest is drained and counted), and re-masking once
//!   the returned secret is known.
//!
//! Every occurrence of every form becomes [`MASK_MARKER`]; overlapping and adjacent
//! occurrences are merged into one marker, so neither lengths nor counts leak. A non-empty
//! value shorter than [`MIN_MASK_LEN`] cannot be masked without destroying the log, so such
//! a masker *withholds*: whole outputs are replaced by [`WITHHELD_NOTICE`].

mod capture;
mod engine;
mod forms;
mod stream;
#[cfg(test)]
mod tests;

use std::fmt;

use zeroize::Zeroizing;

pub use capture::{CapturedLog, LogCapture};
pub use stream::MaskStream;

use engine::{Digest, Engine};
use forms::Channel;

/// Values shorter than this (in bytes) cannot be masked without destroying the log.
///
/// Masking every occurrence of, say, `ab` would shred ordinary text and still let the
/// value be inferred from what is left, so a masker holding such a value withholds whole
/// logs instead (see [`Masker::withholds`]). Encoded forms shorter than this are not
/// masked at all: they would match too much unrelated text.
pub const MIN_MASK_LEN: usize = 4;

/// Each line of a multi-line value at least this long (without its line end) is masked on
/// its own too, wherever it appears; shorter lines (`-----`, `}`) only as part of the value.
pub const MIN_LINE_LEN: usize = 8;

/// What each masked occurrence becomes: one fixed marker, whatever the value's length.
pub const MASK_MARKER: &str = "***";

/// What replaces a whole log when a value is too short to mask.
pub const WITHHELD_NOTICE: &str = "[log withheld: a value shorter than 4 bytes cannot be masked]";

/// A value or one encoded form of it, wiped on drop.
type Pattern = Zeroizing<Vec<u8>>;

/// An immutable set of values to mask, in all their encoded forms.
///
/// Cheap to share: wrap it in an [`Arc`](std::sync::Arc); it is `Send + Sync`.
#[derive(Default)]
pub struct Masker {
    /// The values (zeroised on drop), so that [`CapturedLog::remask`] can build on them.
    values: Vec<Pattern>,
    /// What the engine keeps of each form (length, hash, first bytes), so that
    /// [`Masker::extended`] only computes the new values' forms.
    forms: Vec<(Channel, Digest)>,
    /// Every form of every value, ready to match; `None` when there is nothing to mask
    /// (or it could not be built, and the masker withholds).
    engine: Option<Engine>,
    /// A value is too short to mask (or the engine could not be built): fail closed.
    withholds: bool,
}

impl fmt::Debug for Masker {
    // Values are secrets: show only harmless shape information.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Masker")
            .field("patterns", &self.pattern_count())
            .field("withholds", &self.withholds)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// Build from values; empty values are ignored.
    ///
    /// A non-empty value shorter than [`MIN_MASK_LEN`] makes the masker withhold.
    pub fn new<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        Masker::default().extended(values)
    }

    /// Build from template variable values. A value shorter than [`MIN_MASK_LEN`] is left
    /// unmasked rather than withholding the log: such values (a region, an engine name)
    /// are rarely secrets, and the minimum is documented. The returned secret is added
    /// with [`Masker::extended`], which stays strict.
    pub fn for_variables<'a>(values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        Masker::new(values.into_iter().filter(|v| v.len() >= MIN_MASK_LEN))
    }

    /// A new masker with this one's values plus `values` (e.g. the variables plus the
    /// returned secret). Only the new values' forms are computed.
    pub fn extended<'a>(&self, values: impl IntoIterator<Item = &'a [u8]>) -> Masker {
        let mut all = self.values.clone();
        let mut forms = self.forms.clone();
        let mut withholds = self.withholds;
        for v in values {
            if v.is_empty() || all.iter().any(|a| a.as_slice() == v) {
                continue;
            }
            if v.len() < MIN_MASK_LEN {
                withholds = true;
            }
            value_forms(v, &mut forms);
            all.push(Zeroizing::new(v.to_vec()));
        }
        Masker::build(all, forms, withholds)
    }

    /// The engine over `forms`; none for a masker that withholds, which never scans.
    fn build(values: Vec<Pattern>, forms: Vec<(Channel, Digest)>, mut withholds: bool) -> Masker {
        let engine = if forms.is_empty() || withholds {
            None
        } else {
            match Engine::build(&forms) {
                Ok(e) => Some(e),
                Err(_) => {
                    // Too many patterns for the automaton: nothing can be masked, so
                    // nothing may be shown.
                    withholds = true;
                    None
                }
            }
        };
        Masker {
            values,
            forms,
            engine,
            withholds,
        }
    }

    /// This masker plus, for each form of a value `prev` does not have, the form as `prev`
    /// masks it (where that differs): how such a value looks in a log `prev` masked.
    /// `None` if `prev` masks nothing.
    fn with_premasked_forms(&self, prev: &Masker) -> Option<Masker> {
        let engine = prev.engine.as_ref()?;
        if prev.withholds() {
            return None;
        }
        let quick = engine.any_pattern_finder();
        let mut forms = self.forms.clone();
        for v in &self.values {
            if !prev.values.iter().any(|p| p.as_slice() == v.as_slice()) {
                premasked_forms(v, prev, quick.as_ref(), &mut forms);
            }
        }
        Some(Masker::build(self.values.clone(), forms, self.withholds))
    }

    /// Mask a complete buffer.
    ///
    /// Returns [`WITHHELD_NOTICE`] instead when [`Masker::withholds`] is true.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        if self.withholds {
            return WITHHELD_NOTICE.as_bytes().to_vec();
        }
        stream::mask_all(self, input)
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
        self.values.is_empty()
    }

    /// Number of distinct encoded forms matched.
    pub fn pattern_count(&self) -> usize {
        self.engine.as_ref().map_or(0, Engine::form_count)
    }

    /// The most input bytes one occurrence of a form can span (a wrapped base64 form spans
    /// its line breaks too): a stream holds back less than this.
    pub fn max_pattern_len(&self) -> usize {
        self.engine.as_ref().map_or(0, Engine::max_span)
    }

    /// Approximate heap bytes the masker holds (values and matching tables).
    pub fn memory_usage(&self) -> usize {
        self.values.iter().map(|v| v.capacity()).sum::<usize>()
            + self.engine.as_ref().map_or(0, Engine::memory_usage)
    }

    /// How many bytes at the end of `text` could begin an occurrence still in progress.
    fn live_tail(&self, text: &[u8]) -> usize {
        self.engine.as_ref().map_or(0, |e| e.live_tail(text))
    }
}

/// Push the digest of every form of `v` worth masking: the raw value always, any other
/// form only if at least [`MIN_MASK_LEN`] long (and, in the raw channel, not the value
/// itself).
fn value_forms(v: &[u8], out: &mut Vec<(Channel, Digest)>) {
    let mut raw: Option<Digest> = None;
    let mut base: Option<Digest> = None;
    forms::each_form(v, &mut |form| {
        let d = match (form.extends, &base) {
            (Some(suffix), Some(b)) => b.followed_by(suffix),
            _ => Digest::of(form.gen),
        };
        let ch = form.channel;
        let keep = match &raw {
            // The raw value: always (a short one withholds).
            None => true,
            Some(r) => d.len() >= MIN_MASK_LEN && (ch != Channel::Raw || d != *r),
        };
        if raw.is_none() {
            raw = Some(d.clone());
        } else if form.extends.is_none() {
            base = Some(d.clone());
        }
        if keep {
            out.push((ch, d));
        }
    });
}

/// Push the digest of each form of `v` as `prev` masks it, where that differs and is long
/// enough. `quick` finds any of `prev`'s automaton patterns: a form without one (and
/// without line breaks, which `prev`'s base64 channel would skip) is left as it is by
/// `prev`, so it costs one fast search instead of a masking pass.
fn premasked_forms(
    v: &[u8],
    prev: &Masker,
    quick: Option<&aho_corasick::AhoCorasick>,
    out: &mut Vec<(Channel, Digest)>,
) {
    let mut first = true;
    let mut bytes: Zeroizing<Vec<u8>> = Zeroizing::new(Vec::with_capacity(2 * v.len()));
    forms::each_form(v, &mut |form| {
        let is_raw = std::mem::take(&mut first);
        if !form.premask {
            return;
        }
        bytes.clear();
        (form.gen)(&mut |p| bytes.extend_from_slice(p));
        let keep = is_raw
            || (bytes.len() >= MIN_MASK_LEN
                && (form.channel != Channel::Raw || bytes.as_slice() != v));
        let breaks = bytes.iter().any(|&b| b == b'\n' || b == b'\r');
        let untouched = quick.is_some_and(|q| !breaks && !q.is_match(bytes.as_slice()));
        if !keep || untouched {
            return;
        }
        let gen = |e: forms::Emit<'_>| e(&bytes);
        let q = Digest::masked(prev, &gen);
        if q.len() >= MIN_MASK_LEN && q != Digest::of(&gen) {
            out.push((form.channel, q));
        }
    });
}
