//! Polynomial hashing mod 2^61 − 1 with one random base per process: h(s) =
//! Σ s[i]·B^(len−1−i). Equal strings hash equal; distinct strings of length n collide with
//! probability about n / 2^61 for a base the text's author does not know.

use std::sync::OnceLock;

const P: u64 = (1 << 61) - 1;

#[inline]
pub(super) fn reduce(x: u64) -> u64 {
    let r = (x & P) + (x >> 61);
    if r >= P {
        r - P
    } else {
        r
    }
}

#[inline]
pub(super) fn mulmod(a: u64, b: u64) -> u64 {
    let x = u128::from(a) * u128::from(b);
    reduce((x as u64 & P) + (x >> 61) as u64)
}

#[inline]
pub(super) fn addmod(a: u64, b: u64) -> u64 {
    let s = a + b;
    if s >= P {
        s - P
    } else {
        s
    }
}

#[inline]
pub(super) fn submod(a: u64, b: u64) -> u64 {
    if a >= b {
        a - b
    } else {
        a + P - b
    }
}

/// Polynomial hashing with one random base per process: h(s) = Σ s[i]·B^(len−1−i).
pub(super) struct Hasher {
    pub(super) base: u64,
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
    pub(super) fn extend(&self, h: u64, bytes: &[u8]) -> u64 {
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

    pub(super) fn extend_serial(&self, mut h: u64, bytes: &[u8]) -> u64 {
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

    pub(super) fn pow(&self, mut n: u64) -> u64 {
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

pub(super) fn hasher() -> &'static Hasher {
    static HASHER: OnceLock<Hasher> = OnceLock::new();
    HASHER.get_or_init(|| {
        // A base unknown to whoever writes the output makes collisions unplannable; they
        // could only cause over-masking anyway.
        let seed = getrandom::u64().unwrap_or(0x9e37_79b9_7f4a_7c15);
        Hasher::new(256 + seed % (P - 512))
    })
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
        // The four-lane path agrees with the serial one, at every split.
        let long: Vec<u8> = (0..5000u32).map(|i| (i * 131 % 251) as u8).collect();
        let serial = hs.extend_serial(0, &long);
        for cut in [0, 1, 7, 511, 512, 513, 2048, 4999, 5000] {
            assert_eq!(
                hs.extend(hs.extend(0, &long[..cut]), &long[cut..]),
                serial,
                "{cut}"
            );
        }
    }
}
