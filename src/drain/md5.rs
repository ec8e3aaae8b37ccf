//! Pure: MD5 (RFC 1321), the KPL format's checksum; nothing secret rests on it.
//! Written here rather than taken as a crate: checked against the RFC's test
//! suite and against awslabs' deaggregator in the tests.
//!
//! MD5 is one long chain of dependent steps, so one message leaves most of a
//! core idle. A request carries several aggregated records; [`md5_each`]
//! hashes four of them at once in the lanes of one SIMD register (SSE2 on
//! x86_64, NEON on aarch64), a third of the instructions per byte of hashing
//! them one by one. Other targets (armv7 without a guaranteed NEON) hash one
//! by one.
//!
//! What makes it fast is the length of that chain, per step: the state stays
//! in registers from block to block, the message words come in with a few
//! shuffles, and each step adds its word and constant *off* the chain (see
//! `opaque`).

/// The state every message starts from.
const INITIAL: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];

/// RFC 1321's table: `T[i] = floor(abs(sin(i + 1)) * 2^32)`.
const K: [u32; 64] = [
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
    0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
    0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
    0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
    0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
    0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
];

/// RFC 1321's 64 steps `[abcd k s i]`, written out: at the release profile's
/// `opt-level = "s"` a loop is not unrolled, and the rotation amounts and word
/// indexes must be constants for this to be cheap (it runs over every
/// aggregated byte). `$step` is the engine's own step: scalar or lanes.
macro_rules! md5_steps {
    ($step:ident, $a:ident, $b:ident, $c:ident, $d:ident) => {
        $step!(f, $a, $b, $c, $d, 0, 7, 0);
        $step!(f, $d, $a, $b, $c, 1, 12, 1);
        $step!(f, $c, $d, $a, $b, 2, 17, 2);
        $step!(f, $b, $c, $d, $a, 3, 22, 3);
        $step!(f, $a, $b, $c, $d, 4, 7, 4);
        $step!(f, $d, $a, $b, $c, 5, 12, 5);
        $step!(f, $c, $d, $a, $b, 6, 17, 6);
        $step!(f, $b, $c, $d, $a, 7, 22, 7);
        $step!(f, $a, $b, $c, $d, 8, 7, 8);
        $step!(f, $d, $a, $b, $c, 9, 12, 9);
        $step!(f, $c, $d, $a, $b, 10, 17, 10);
        $step!(f, $b, $c, $d, $a, 11, 22, 11);
        $step!(f, $a, $b, $c, $d, 12, 7, 12);
        $step!(f, $d, $a, $b, $c, 13, 12, 13);
        $step!(f, $c, $d, $a, $b, 14, 17, 14);
        $step!(f, $b, $c, $d, $a, 15, 22, 15);
        $step!(g, $a, $b, $c, $d, 1, 5, 16);
        $step!(g, $d, $a, $b, $c, 6, 9, 17);
        $step!(g, $c, $d, $a, $b, 11, 14, 18);
        $step!(g, $b, $c, $d, $a, 0, 20, 19);
        $step!(g, $a, $b, $c, $d, 5, 5, 20);
        $step!(g, $d, $a, $b, $c, 10, 9, 21);
        $step!(g, $c, $d, $a, $b, 15, 14, 22);
        $step!(g, $b, $c, $d, $a, 4, 20, 23);
        $step!(g, $a, $b, $c, $d, 9, 5, 24);
        $step!(g, $d, $a, $b, $c, 14, 9, 25);
        $step!(g, $c, $d, $a, $b, 3, 14, 26);
        $step!(g, $b, $c, $d, $a, 8, 20, 27);
        $step!(g, $a, $b, $c, $d, 13, 5, 28);
        $step!(g, $d, $a, $b, $c, 2, 9, 29);
        $step!(g, $c, $d, $a, $b, 7, 14, 30);
        $step!(g, $b, $c, $d, $a, 12, 20, 31);
        $step!(h, $a, $b, $c, $d, 5, 4, 32);
        $step!(h, $d, $a, $b, $c, 8, 11, 33);
        $step!(h, $c, $d, $a, $b, 11, 16, 34);
        $step!(h, $b, $c, $d, $a, 14, 23, 35);
        $step!(h, $a, $b, $c, $d, 1, 4, 36);
        $step!(h, $d, $a, $b, $c, 4, 11, 37);
        $step!(h, $c, $d, $a, $b, 7, 16, 38);
        $step!(h, $b, $c, $d, $a, 10, 23, 39);
        $step!(h, $a, $b, $c, $d, 13, 4, 40);
        $step!(h, $d, $a, $b, $c, 0, 11, 41);
        $step!(h, $c, $d, $a, $b, 3, 16, 42);
        $step!(h, $b, $c, $d, $a, 6, 23, 43);
        $step!(h, $a, $b, $c, $d, 9, 4, 44);
        $step!(h, $d, $a, $b, $c, 12, 11, 45);
        $step!(h, $c, $d, $a, $b, 15, 16, 46);
        $step!(h, $b, $c, $d, $a, 2, 23, 47);
        $step!(i, $a, $b, $c, $d, 0, 6, 48);
        $step!(i, $d, $a, $b, $c, 7, 10, 49);
        $step!(i, $c, $d, $a, $b, 14, 15, 50);
        $step!(i, $b, $c, $d, $a, 5, 21, 51);
        $step!(i, $a, $b, $c, $d, 12, 6, 52);
        $step!(i, $d, $a, $b, $c, 3, 10, 53);
        $step!(i, $c, $d, $a, $b, 10, 15, 54);
        $step!(i, $b, $c, $d, $a, 1, 21, 55);
        $step!(i, $a, $b, $c, $d, 8, 6, 56);
        $step!(i, $d, $a, $b, $c, 15, 10, 57);
        $step!(i, $c, $d, $a, $b, 6, 15, 58);
        $step!(i, $b, $c, $d, $a, 13, 21, 59);
        $step!(i, $a, $b, $c, $d, 4, 6, 60);
        $step!(i, $d, $a, $b, $c, 11, 10, 61);
        $step!(i, $c, $d, $a, $b, 2, 15, 62);
        $step!(i, $b, $c, $d, $a, 9, 21, 63);
    };
}

/// The MD5 of `input`.
pub fn md5(input: &[u8]) -> [u8; 16] {
    let mut state = INITIAL;
    scalar::compress_rest(&mut state, &mut Message::new(input));
    digest(state)
}

/// The MD5 of each input, in order: four at a time in SIMD lanes where the
/// target has them (see the module's comment), else one by one.
pub fn md5_each(inputs: &[&[u8]]) -> Vec<[u8; 16]> {
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if inputs.len() > 1 {
        return lanes::md5_each(inputs);
    }
    inputs.iter().map(|input| md5(input)).collect()
}

/// One message as MD5 reads it: its whole 64-byte blocks straight from the
/// input (no copy of a 50 KB record), then the padded tail (0x80, zeros, the
/// length in bits) from a buffer of its own.
struct Message<'a> {
    whole: &'a [u8],
    tail: [u8; 128],
    tail_len: usize,
    /// Blocks handed out so far.
    read: usize,
}

impl<'a> Message<'a> {
    fn new(input: &'a [u8]) -> Self {
        let split = input.len() / 64 * 64;
        let (whole, rest) = input.split_at(split);
        let mut tail = [0u8; 128];
        tail[..rest.len()].copy_from_slice(rest);
        tail[rest.len()] = 0x80;
        let tail_len = if rest.len() < 56 { 64 } else { 128 };
        tail[tail_len - 8..tail_len]
            .copy_from_slice(&(input.len() as u64).wrapping_mul(8).to_le_bytes());
        Message {
            whole,
            tail,
            tail_len,
            read: 0,
        }
    }

    /// Whether every block was handed out.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn done(&self) -> bool {
        self.pending().is_empty()
    }

    /// The next blocks that lie together in memory: the rest of the input's
    /// whole blocks, else the rest of the padded tail.
    fn pending(&self) -> &[u8] {
        let offset = self.read * 64;
        if offset < self.whole.len() {
            &self.whole[offset..]
        } else {
            let offset = (offset - self.whole.len()).min(self.tail_len);
            &self.tail[offset..self.tail_len]
        }
    }

    /// Marks `blocks` of [`Self::pending`] as hashed.
    fn consume(&mut self, blocks: usize) {
        self.read += blocks;
    }
}

fn digest(state: [u32; 4]) -> [u8; 16] {
    let mut digest = [0u8; 16];
    for (bytes, word) in digest.chunks_exact_mut(4).zip(state) {
        bytes.copy_from_slice(&word.to_le_bytes());
    }
    digest
}

fn words(block: &[u8; 64]) -> [u32; 16] {
    let mut m = [0u32; 16];
    for (word, bytes) in m.iter_mut().zip(block.chunks_exact(4)) {
        *word = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
    }
    m
}

/// `value` as it is, out of the optimizer's sight. A step is
/// `b + ((a + word + constant + F(b, c, d)) <<< s)`: only `F(b, c, d)` waits for
/// the value the last step made, so `a + word + constant` is best added while it
/// runs. Left alone, LLVM regroups the sum to add the constant last, one more
/// operation on the chain of every step (about a sixth of MD5's time).
#[inline(always)]
fn opaque(mut value: u32) -> u32 {
    // SAFETY: an empty asm block: the operand is named in a comment only, so
    // nothing is read or written but the register the value is already in.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("/* {0:e} */", inout(reg) value, options(pure, nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("/* {0:w} */", inout(reg) value, options(pure, nomem, nostack, preserves_flags));
        #[cfg(target_arch = "arm")]
        core::arch::asm!("/* {0} */", inout(reg) value, options(pure, nomem, nostack, preserves_flags));
    }
    value
}

mod scalar {
    // F as the RFC's selection, in three operations instead of four.
    fn f(x: u32, y: u32, z: u32) -> u32 {
        z ^ (x & (y ^ z))
    }
    // G's halves share no bit, so G = (x & z) + (y & !z): the half without
    // `x`, the value the chain just made, is added off the chain (see `step`).
    fn g_late(x: u32, z: u32) -> u32 {
        x & z
    }
    fn g_early(y: u32, z: u32) -> u32 {
        y & !z
    }
    // `x` is the value the chain just made: last, so one operation waits for it.
    fn h(x: u32, y: u32, z: u32) -> u32 {
        x ^ (y ^ z)
    }
    fn i(x: u32, y: u32, z: u32) -> u32 {
        y ^ (x | !z)
    }

    /// What is left of `message` into `state`, a block at a time.
    pub(super) fn compress_rest(state: &mut [u32; 4], message: &mut super::Message<'_>) {
        loop {
            let run = message.pending();
            if run.is_empty() {
                return;
            }
            let blocks = run.len() / 64;
            for block in run.chunks_exact(64) {
                compress(state, block.try_into().expect("64 bytes"));
            }
            message.consume(blocks);
        }
    }

    /// One 64-byte block into `state`.
    fn compress(state: &mut [u32; 4], block: &[u8; 64]) {
        let m = super::words(block);
        let [mut a, mut b, mut c, mut d] = *state;
        // a = b + ((a + F(b,c,d) + X[k] + T[i]) <<< s)
        macro_rules! step {
            (g, $a:ident, $b:ident, $c:ident, $d:ident, $k:literal, $s:literal, $i:literal) => {
                $a = $b.wrapping_add(
                    super::opaque(
                        $a.wrapping_add(m[$k])
                            .wrapping_add(super::K[$i])
                            .wrapping_add(g_early($c, $d)),
                    )
                    .wrapping_add(g_late($b, $d))
                    .rotate_left($s),
                );
            };
            ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $k:literal, $s:literal, $i:literal) => {
                $a = $b.wrapping_add(
                    super::opaque($a.wrapping_add(m[$k]).wrapping_add(super::K[$i]))
                        .wrapping_add($fun($b, $c, $d))
                        .rotate_left($s),
                );
            };
        }
        md5_steps!(step, a, b, c, d);
        for (word, add) in state.iter_mut().zip([a, b, c, d]) {
            *word = word.wrapping_add(add);
        }
    }
}

/// Four messages at once, one per lane of a 128-bit register, a run of blocks
/// at a time: as many as every busy lane has together in memory (most of a
/// record at once). A lane whose message ends takes the next waiting one; when
/// one message is left it is finished by the scalar code (a lone lane would
/// cost more than it).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
mod lanes {
    use super::{digest, scalar, simd, Message, INITIAL};

    const LANES: usize = 4;

    pub(super) fn md5_each(inputs: &[&[u8]]) -> Vec<[u8; 16]> {
        let mut digests = vec![[0u8; 16]; inputs.len()];
        let mut waiting = inputs.iter().enumerate();
        let mut lanes: [Option<(usize, Message)>; LANES] = Default::default();
        let mut states = [INITIAL; LANES];
        for lane in &mut lanes {
            *lane = waiting
                .next()
                .map(|(index, input)| (index, Message::new(input)));
        }
        loop {
            // A lane whose message is done gives its digest and takes the next waiting one.
            for (lane, slot) in lanes.iter_mut().enumerate() {
                if slot.as_ref().is_some_and(|(_, message)| message.done()) {
                    let (index, _) = slot.take().expect("a busy lane");
                    digests[index] = digest(states[lane]);
                    states[lane] = INITIAL;
                    *slot = waiting
                        .next()
                        .map(|(index, input)| (index, Message::new(input)));
                }
            }
            if lanes.iter().filter(|lane| lane.is_some()).count() <= 1 {
                break;
            }
            // Each busy lane's run; an idle lane hashes a busy lane's, unread.
            let mut busy = lanes.iter().flatten().map(|(_, message)| message.pending());
            let first = busy.next().expect("two busy lanes");
            let blocks = busy.fold(first.len(), |blocks, run| blocks.min(run.len())) / 64;
            let runs: [&[u8]; LANES] = core::array::from_fn(|lane| match &lanes[lane] {
                Some((_, message)) => &message.pending()[..blocks * 64],
                None => &first[..blocks * 64],
            });
            // SAFETY: SSE2 and NEON are part of every x86_64 and aarch64 CPU
            // (both targets' baseline), so the CPU has what `compress` needs.
            unsafe { simd::compress(&mut states, runs) };
            for (_, message) in lanes.iter_mut().flatten() {
                message.consume(blocks);
            }
        }
        // The last message alone, on from where its lane left it.
        for (lane, slot) in lanes.iter_mut().enumerate() {
            if let Some((index, mut message)) = slot.take() {
                let mut state = states[lane];
                scalar::compress_rest(&mut state, &mut message);
                digests[index] = digest(state);
            }
        }
        digests
    }
}

/// `compress` for the lanes, over the `simd` module's `V`, `load`, `store`,
/// `splat`, `add`, `words`, `opaque`, `f`, `g_late`, `g_early`, `h`, `i` and `rotate_left!`: the blocks
/// of four runs of equal length, one run per lane, into each lane's state.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
macro_rules! lane_compress {
    ($feature:literal) => {
        #[target_feature(enable = $feature)]
        pub(super) fn compress(states: &mut [[u32; 4]; 4], runs: [&[u8]; 4]) {
            // Registers hold one word of every lane: transpose on the way in and out.
            let column = |rows: &[[u32; 4]; 4], word: usize| {
                load([rows[0][word], rows[1][word], rows[2][word], rows[3][word]])
            };
            let (mut a, mut b, mut c, mut d) = (
                column(states, 0),
                column(states, 1),
                column(states, 2),
                column(states, 3),
            );
            let mut runs = runs.map(|run| run.chunks_exact(64));
            while let [Some(b0), Some(b1), Some(b2), Some(b3)] = runs.each_mut().map(Iterator::next) {
                let m = words([b0, b1, b2, b3]);
                // Defined here, where `m` is: a macro sees the names of where it is written.
                macro_rules! step {
                    (g, $a:ident, $b:ident, $c:ident, $d:ident, $k:literal, $s:literal, $i:literal) => {
                        $a = add(
                            $b,
                            rotate_left!(
                                add(
                                    opaque(add(
                                        add($a, add(m[$k], splat(super::K[$i]))),
                                        g_early($c, $d)
                                    )),
                                    g_late($b, $d)
                                ),
                                $s
                            ),
                        );
                    };
                    ($fun:ident, $a:ident, $b:ident, $c:ident, $d:ident, $k:literal, $s:literal, $i:literal) => {
                        $a = add(
                            $b,
                            rotate_left!(
                                add(
                                    opaque(add($a, add(m[$k], splat(super::K[$i])))),
                                    $fun($b, $c, $d)
                                ),
                                $s
                            ),
                        );
                    };
                }
                let start = (a, b, c, d);
                md5_steps!(step, a, b, c, d);
                (a, b, c, d) = (
                    add(a, start.0),
                    add(b, start.1),
                    add(c, start.2),
                    add(d, start.3),
                );
            }
            let words = [store(a), store(b), store(c), store(d)];
            for (lane, state) in states.iter_mut().enumerate() {
                *state = [words[0][lane], words[1][lane], words[2][lane], words[3][lane]];
            }
        }
    };
}
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
use lane_compress;

/// The four-lane step on x86_64's SSE2 (part of every x86_64 CPU).
#[cfg(target_arch = "x86_64")]
mod simd {
    use core::arch::asm;
    use core::arch::x86_64::{
        __m128i, _mm_add_epi32, _mm_and_si128, _mm_andnot_si128, _mm_loadu_si128, _mm_or_si128,
        _mm_set1_epi32, _mm_set_epi32, _mm_slli_epi32, _mm_srli_epi32, _mm_storeu_si128,
        _mm_unpackhi_epi32, _mm_unpackhi_epi64, _mm_unpacklo_epi32, _mm_unpacklo_epi64,
        _mm_xor_si128,
    };

    type V = __m128i;

    #[inline]
    #[target_feature(enable = "sse2")]
    fn load(lanes: [u32; 4]) -> V {
        _mm_set_epi32(
            lanes[3] as i32,
            lanes[2] as i32,
            lanes[1] as i32,
            lanes[0] as i32,
        )
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn store(v: V) -> [u32; 4] {
        let mut lanes = [0u32; 4];
        // SAFETY: an unaligned store of 16 bytes into a 16-byte array.
        unsafe { _mm_storeu_si128(lanes.as_mut_ptr().cast(), v) };
        lanes
    }

    /// The 16 words of four 64-byte blocks, word `i` of every block in `m[i]`:
    /// four 4 × 4 transposes of 16-byte loads.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn words(blocks: [&[u8]; 4]) -> [V; 16] {
        let mut m = [_mm_set1_epi32(0); 16];
        for (quarter, m) in m.chunks_exact_mut(4).enumerate() {
            let rows = blocks.map(|block| {
                let bytes = &block[16 * quarter..16 * quarter + 16];
                // SAFETY: an unaligned load of the 16 bytes of `bytes`.
                unsafe { _mm_loadu_si128(bytes.as_ptr().cast()) }
            });
            let low = (
                _mm_unpacklo_epi32(rows[0], rows[1]),
                _mm_unpacklo_epi32(rows[2], rows[3]),
            );
            let high = (
                _mm_unpackhi_epi32(rows[0], rows[1]),
                _mm_unpackhi_epi32(rows[2], rows[3]),
            );
            m[0] = _mm_unpacklo_epi64(low.0, low.1);
            m[1] = _mm_unpackhi_epi64(low.0, low.1);
            m[2] = _mm_unpacklo_epi64(high.0, high.1);
            m[3] = _mm_unpackhi_epi64(high.0, high.1);
        }
        m
    }

    /// As the scalar `opaque`.
    #[inline(always)]
    fn opaque(mut v: V) -> V {
        // SAFETY: an empty asm block; see the scalar `opaque`.
        unsafe {
            asm!("/* {0} */", inout(xmm_reg) v, options(pure, nomem, nostack, preserves_flags))
        };
        v
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn splat(word: u32) -> V {
        _mm_set1_epi32(word as i32)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn add(x: V, y: V) -> V {
        _mm_add_epi32(x, y)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn f(x: V, y: V, z: V) -> V {
        _mm_xor_si128(z, _mm_and_si128(x, _mm_xor_si128(y, z)))
    }

    /// G's halves, as the scalar `g_late` and `g_early`.
    #[inline]
    #[target_feature(enable = "sse2")]
    fn g_late(x: V, z: V) -> V {
        _mm_and_si128(x, z)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn g_early(y: V, z: V) -> V {
        _mm_andnot_si128(z, y)
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn h(x: V, y: V, z: V) -> V {
        _mm_xor_si128(x, _mm_xor_si128(y, z))
    }

    #[inline]
    #[target_feature(enable = "sse2")]
    fn i(x: V, y: V, z: V) -> V {
        _mm_xor_si128(y, _mm_or_si128(x, _mm_xor_si128(z, splat(u32::MAX))))
    }

    macro_rules! rotate_left {
        ($x:expr, $s:literal) => {{
            let x = $x;
            _mm_or_si128(_mm_slli_epi32::<$s>(x), _mm_srli_epi32::<{ 32 - $s }>(x))
        }};
    }

    super::lane_compress!("sse2");
}

/// The four-lane step on aarch64's NEON (part of every aarch64 CPU).
#[cfg(target_arch = "aarch64")]
mod simd {
    use core::arch::aarch64::{
        uint32x4_t, vaddq_u32, vandq_u32, vbicq_u32, vbslq_u32, vdupq_n_u32, veorq_u32, vld1q_u32,
        vornq_u32, vreinterpretq_u32_u64, vreinterpretq_u64_u32, vshlq_n_u32, vsriq_n_u32,
        vst1q_u32, vzip1q_u32, vzip1q_u64, vzip2q_u32, vzip2q_u64,
    };
    use core::arch::asm;

    type V = uint32x4_t;

    #[inline]
    #[target_feature(enable = "neon")]
    fn load(lanes: [u32; 4]) -> V {
        // SAFETY: a load of 16 bytes from a 16-byte array.
        unsafe { vld1q_u32(lanes.as_ptr()) }
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn store(v: V) -> [u32; 4] {
        let mut lanes = [0u32; 4];
        // SAFETY: a store of 16 bytes into a 16-byte array.
        unsafe { vst1q_u32(lanes.as_mut_ptr(), v) };
        lanes
    }

    /// The 16 words of four 64-byte blocks, word `i` of every block in `m[i]`:
    /// four 4 × 4 transposes of 16-byte loads (the words are little-endian,
    /// as the target is).
    #[inline]
    #[target_feature(enable = "neon")]
    fn words(blocks: [&[u8]; 4]) -> [V; 16] {
        let mut m = [vdupq_n_u32(0); 16];
        for (quarter, m) in m.chunks_exact_mut(4).enumerate() {
            let rows = blocks.map(|block| {
                let bytes = &block[16 * quarter..16 * quarter + 16];
                // SAFETY: a load of the 16 bytes of `bytes` (no alignment needed).
                unsafe { vld1q_u32(bytes.as_ptr().cast()) }
            });
            let pairs = [
                vreinterpretq_u64_u32(vzip1q_u32(rows[0], rows[1])),
                vreinterpretq_u64_u32(vzip1q_u32(rows[2], rows[3])),
                vreinterpretq_u64_u32(vzip2q_u32(rows[0], rows[1])),
                vreinterpretq_u64_u32(vzip2q_u32(rows[2], rows[3])),
            ];
            m[0] = vreinterpretq_u32_u64(vzip1q_u64(pairs[0], pairs[1]));
            m[1] = vreinterpretq_u32_u64(vzip2q_u64(pairs[0], pairs[1]));
            m[2] = vreinterpretq_u32_u64(vzip1q_u64(pairs[2], pairs[3]));
            m[3] = vreinterpretq_u32_u64(vzip2q_u64(pairs[2], pairs[3]));
        }
        m
    }

    /// As the scalar `opaque`.
    #[inline(always)]
    fn opaque(mut v: V) -> V {
        // SAFETY: an empty asm block; see the scalar `opaque`.
        unsafe {
            asm!("/* {0:v} */", inout(vreg) v, options(pure, nomem, nostack, preserves_flags))
        };
        v
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn splat(word: u32) -> V {
        vdupq_n_u32(word)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn add(x: V, y: V) -> V {
        vaddq_u32(x, y)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn f(x: V, y: V, z: V) -> V {
        // Where x, y, else z: one bit select.
        vbslq_u32(x, y, z)
    }

    /// G's halves, as the scalar `g_late` and `g_early`.
    #[inline]
    #[target_feature(enable = "neon")]
    fn g_late(x: V, z: V) -> V {
        vandq_u32(x, z)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn g_early(y: V, z: V) -> V {
        vbicq_u32(y, z)
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn h(x: V, y: V, z: V) -> V {
        veorq_u32(x, veorq_u32(y, z))
    }

    #[inline]
    #[target_feature(enable = "neon")]
    fn i(x: V, y: V, z: V) -> V {
        // x | !z in one instruction.
        veorq_u32(y, vornq_u32(x, z))
    }

    macro_rules! rotate_left {
        ($x:expr, $s:literal) => {{
            let x = $x;
            vsriq_n_u32::<{ 32 - $s }>(vshlq_n_u32::<$s>(x), x)
        }};
    }

    super::lane_compress!("neon");
}

#[cfg(test)]
mod tests;
