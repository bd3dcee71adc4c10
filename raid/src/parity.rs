//! Parity arithmetic: RAID5 XOR parity and RAID6 P+Q over GF(2^8), with recovery of every
//! one- and two-strip loss.
//!
//! A stripe is a list of equal-length strips in *slot order*: data strips `0..k`, then P,
//! then (RAID6) Q. Slot order is not member order; [`crate::layout::Layout::role_in_stripe`]
//! translates. The maths is md's (`lib/raid6`): `P = ⊕ Dᵢ` and `Q = ⊕ gⁱ·Dᵢ` in GF(2⁸) with
//! the polynomial `x⁸+x⁴+x³+x²+1` (0x11d) and generator `g = 2`, Q evaluated by Horner's rule
//! `Q = (((D_{k-1})·g ⊕ D_{k-2})·g ⊕ …)·g ⊕ D₀`.
//!
//! Speed: every kernel works on eight bytes at a time as a `u64` ("SWAR"), which LLVM turns
//! into 16- or 32-byte vector code. Multiplying all eight bytes by `g` is a shift, a mask and
//! a subtraction; multiplying by any other constant is the XOR of the shifted copies selected
//! by the constant's bits. P and Q are computed column by column ([`COLUMN`] bytes of every
//! data strip at a time) so each data byte is read once and the accumulators stay in
//! registers. On x86_64 the same portable code is also compiled with AVX2 and chosen at run
//! time (the crate's only `unsafe`: see `multiversion!`).
//!
//! Every function checks that the strips have equal lengths and returns [`ParityError`]
//! instead of panicking. Nothing here allocates.

use std::time::{Duration, Instant};

/// Most data strips RAID6 can protect: `gⁱ` must differ for every data index.
pub const RAID6_MAX_DATA: usize = 255;

/// Why a parity operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParityError {
    #[error("strip {index} is {found} bytes long, expected {expected} like the others")]
    LengthMismatch {
        index: usize,
        expected: usize,
        found: usize,
    },
    #[error("a stripe needs at least {min} data strips, got {found}")]
    TooFewData { min: usize, found: usize },
    #[error("RAID6 protects at most {RAID6_MAX_DATA} data strips, got {0}")]
    TooManyData(usize),
    #[error("{lost} lost strips cannot be recovered with {parity} parity strip(s)")]
    TooManyLost { lost: usize, parity: usize },
    #[error("lost strip {slot} is not in a stripe of {strips} strips")]
    LostOutOfRange { slot: usize, strips: usize },
    #[error("strip {0} is listed as lost twice")]
    DuplicateLost(usize),
}

/// Arithmetic in GF(2⁸) with md's polynomial 0x11d, from compile-time tables.
pub mod gf {
    const POLY: u16 = 0x11d;

    const fn build_exp() -> [u8; 512] {
        let mut table = [0u8; 512];
        let mut x: u16 = 1;
        let mut i = 0;
        while i < 512 {
            table[i] = x as u8;
            x <<= 1;
            if x & 0x100 != 0 {
                x ^= POLY;
            }
            i += 1;
        }
        table
    }

    const fn build_log(exp: &[u8; 512]) -> [u8; 256] {
        let mut table = [0u8; 256];
        let mut i = 0;
        while i < 255 {
            table[exp[i] as usize] = i as u8;
            i += 1;
        }
        table
    }

    /// `EXP[i] = gⁱ`, doubled in length so that `EXP[log a + log b]` needs no reduction.
    pub(crate) static EXP: [u8; 512] = build_exp();
    /// `LOG[gⁱ] = i`; `LOG[0]` is meaningless.
    pub(crate) static LOG: [u8; 256] = build_log(&EXP);

    /// `a · b`.
    pub fn mul(a: u8, b: u8) -> u8 {
        if a == 0 || b == 0 {
            return 0;
        }
        EXP[LOG[a as usize] as usize + LOG[b as usize] as usize]
    }

    /// `a⁻¹`; the inverse of 0 is taken to be 0 (callers never ask for it).
    pub fn inv(a: u8) -> u8 {
        if a == 0 {
            return 0;
        }
        EXP[255 - LOG[a as usize] as usize]
    }

    /// `gⁿ`, the Q coefficient of data strip `n`.
    pub fn pow_g(n: usize) -> u8 {
        EXP[n % 255]
    }
}

// ---------------------------------------------------------------------------------------
// Eight-bytes-at-a-time kernels. `chunks_exact(8)` plus `from_ne_bytes` compiles to plain
// loads; the loops have no cross-iteration dependency, so LLVM vectorises them. Tails shorter
// than eight bytes (never seen with block-sized strips) fall back to byte arithmetic.
//
// Every kernel is written once, portably, as an `#[inline(always)]` function, and
// `multiversion!` compiles it a second time with AVX2 enabled (x86_64 only), picked at run
// time. That is the only `unsafe` in the crate: calling a `#[target_feature]` function, which
// is sound once the CPU is known to have the feature. No intrinsics are used; LLVM
// vectorises the same source for 32-byte registers, which roughly doubles P+Q over the
// SSE2 baseline every x86_64 build targets.
// ---------------------------------------------------------------------------------------

const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
const HIGH1: u64 = 0x8080_8080_8080_8080;

/// Multiplies each of the eight bytes by `g`: shift left, and reduce the bytes whose top
/// bit fell out by XOR-ing 0x1d into them. The byte mask is built with a shift and a
/// subtraction (Linux's `int.uc` trick) rather than a multiply, because SSE2 has no 64-bit
/// vector multiply and LLVM would otherwise not vectorise the loops.
#[inline(always)]
fn mul_g(x: u64) -> u64 {
    let top = x & HIGH1;
    // 0x80 in a byte becomes 0xff, 0x00 stays 0x00; the carry out of the top byte wraps away.
    let overflowed = (top << 1).wrapping_sub(top >> 7);
    ((x & LOW7) << 1) ^ (overflowed & 0x1d1d_1d1d_1d1d_1d1d)
}

/// Multiplier for an arbitrary constant: `masks[i]` is all ones when bit `i` is set.
#[derive(Clone, Copy)]
struct Multiplier {
    constant: u8,
    masks: [u64; 8],
}

impl Multiplier {
    fn new(constant: u8) -> Multiplier {
        let mut masks = [0u64; 8];
        for (bit, mask) in masks.iter_mut().enumerate() {
            if constant >> bit & 1 == 1 {
                *mask = u64::MAX;
            }
        }
        Multiplier { constant, masks }
    }

    /// `c · x` for each byte: the XOR of `gⁱ·x` over the set bits `i` of `c`.
    #[inline(always)]
    fn apply(&self, mut x: u64) -> u64 {
        let mut product = x & self.masks[0];
        for mask in &self.masks[1..] {
            x = mul_g(x);
            product ^= x & mask;
        }
        product
    }
}

#[inline(always)]
fn load(bytes: &[u8]) -> u64 {
    // `bytes` is always an 8-byte chunk; the fallback only keeps the function total.
    u64::from_ne_bytes(bytes.try_into().unwrap_or([0; 8]))
}

#[inline(always)]
fn store(bytes: &mut [u8], value: u64) {
    bytes.copy_from_slice(&value.to_ne_bytes());
}

/// Splits off the tail that is not a whole number of 8-byte words.
#[inline(always)]
fn word_len(len: usize) -> usize {
    len & !7
}

/// Defines `$name` as a dispatcher between an AVX2 build and the portable build of the
/// `#[inline(always)]` function `$portable` with the same arguments.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident = $portable:ident($($arg:ident: $ty:ty),* $(,)?)) => {
        $(#[$meta])*
        fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2")]
                fn avx2($($arg: $ty),*) {
                    $portable($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") {
                    // SAFETY: `avx2` is safe code whose only precondition is that the CPU
                    // executes AVX2 instructions, which was detected just above.
                    return unsafe { avx2($($arg),*) };
                }
            }
            $portable($($arg),*)
        }
    };
}

#[inline(always)]
fn xor_portable(dst: &mut [u8], src: &[u8]) {
    let words = word_len(dst.len());
    let (dst_words, dst_tail) = dst.split_at_mut(words);
    let (src_words, src_tail) = src.split_at(words);
    for (d, s) in dst_words.chunks_exact_mut(8).zip(src_words.chunks_exact(8)) {
        store(d, load(d) ^ load(s));
    }
    for (d, s) in dst_tail.iter_mut().zip(src_tail) {
        *d ^= s;
    }
}

multiversion! {
    /// `dst ^= src`; lengths already equal.
    fn xor_kernel = xor_portable(dst: &mut [u8], src: &[u8])
}

#[inline(always)]
fn scale_portable(dst: &mut [u8], by: Multiplier) {
    let words = word_len(dst.len());
    let (words_part, tail) = dst.split_at_mut(words);
    for d in words_part.chunks_exact_mut(8) {
        store(d, by.apply(load(d)));
    }
    for d in tail {
        *d = gf::mul(*d, by.constant);
    }
}

multiversion! {
    /// `dst = c · dst`.
    fn scale_kernel = scale_portable(dst: &mut [u8], by: Multiplier)
}

#[inline(always)]
fn mul_acc_portable(dst: &mut [u8], src: &[u8], by: Multiplier) {
    let words = word_len(dst.len());
    let (dst_words, dst_tail) = dst.split_at_mut(words);
    let (src_words, src_tail) = src.split_at(words);
    for (d, s) in dst_words.chunks_exact_mut(8).zip(src_words.chunks_exact(8)) {
        store(d, load(d) ^ by.apply(load(s)));
    }
    for (d, s) in dst_tail.iter_mut().zip(src_tail) {
        *d ^= gf::mul(*s, by.constant);
    }
}

multiversion! {
    /// `dst ^= c · src`.
    fn mul_acc_kernel = mul_acc_portable(dst: &mut [u8], src: &[u8], by: Multiplier)
}

#[inline(always)]
fn rmw_pq_portable(p: &mut [u8], q: &mut [u8], old: &[u8], new: &[u8], by: Multiplier) {
    let words = word_len(p.len());
    let (p_words, p_tail) = p.split_at_mut(words);
    let (q_words, q_tail) = q.split_at_mut(words);
    let (old_words, old_tail) = old.split_at(words);
    let (new_words, new_tail) = new.split_at(words);
    for (((p, q), old), new) in p_words
        .chunks_exact_mut(8)
        .zip(q_words.chunks_exact_mut(8))
        .zip(old_words.chunks_exact(8))
        .zip(new_words.chunks_exact(8))
    {
        let delta = load(old) ^ load(new);
        store(p, load(p) ^ delta);
        store(q, load(q) ^ by.apply(delta));
    }
    for (((p, q), old), new) in p_tail
        .iter_mut()
        .zip(q_tail.iter_mut())
        .zip(old_tail)
        .zip(new_tail)
    {
        let delta = old ^ new;
        *p ^= delta;
        *q ^= gf::mul(delta, by.constant);
    }
}

multiversion! {
    /// Read-modify-write of both parities: `δ = old ⊕ new; p ^= δ; q ^= c·δ`.
    fn rmw_pq_kernel = rmw_pq_portable(
        p: &mut [u8],
        q: &mut [u8],
        old: &[u8],
        new: &[u8],
        by: Multiplier,
    )
}

#[inline(always)]
fn two_data_portable(a: &mut [u8], b: &mut [u8], coef_px: Multiplier, coef_qx: Multiplier) {
    let words = word_len(a.len());
    let (a_words, a_tail) = a.split_at_mut(words);
    let (b_words, b_tail) = b.split_at_mut(words);
    for (a, b) in a_words.chunks_exact_mut(8).zip(b_words.chunks_exact_mut(8)) {
        let px = load(a);
        let db = coef_px.apply(px) ^ coef_qx.apply(load(b));
        store(b, db);
        store(a, px ^ db);
    }
    for (a, b) in a_tail.iter_mut().zip(b_tail.iter_mut()) {
        let px = *a;
        let db = gf::mul(px, coef_px.constant) ^ gf::mul(*b, coef_qx.constant);
        *b = db;
        *a = px ^ db;
    }
}

multiversion! {
    /// Solves the two-data-loss equations in place: on entry `a = Px`, `b = Qx`; on exit
    /// `b = A·Px ⊕ B·Qx` and `a = Px ⊕ b`.
    fn two_data_kernel = two_data_portable(
        a: &mut [u8],
        b: &mut [u8],
        coef_px: Multiplier,
        coef_qx: Multiplier,
    )
}

/// Bytes of every strip processed together: eight `u64` lanes, which LLVM keeps in four
/// SSE or two AVX registers per accumulator.
pub const COLUMN: usize = 64;
const LANES: usize = COLUMN / 8;

#[inline(always)]
fn load_column(bytes: &[u8]) -> [u64; LANES] {
    let mut column = [0u64; LANES];
    for (lane, chunk) in column.iter_mut().zip(bytes.chunks_exact(8)) {
        *lane = load(chunk);
    }
    column
}

#[inline(always)]
fn store_column(bytes: &mut [u8], column: &[u64; LANES]) {
    for (lane, chunk) in column.iter().zip(bytes.chunks_exact_mut(8)) {
        store(chunk, *lane);
    }
}

/// Computes P and/or Q column by column: each 64-byte column of every data strip is read
/// once and both accumulators stay in registers (md's `raid6_int` / `raid6_avx2` scheme).
/// Unwanted outputs may be empty slices; wanted ones have the data's length (checked by the
/// callers).
/// `WANT_P`/`WANT_Q` are constants so that each combination compiles without the other's
/// arithmetic.
#[inline(always)]
fn syndromes_portable<S: AsRef<[u8]>, const WANT_P: bool, const WANT_Q: bool>(
    data: &[S],
    zero: [Option<usize>; 2],
    p: &mut [u8],
    q: &mut [u8],
) {
    let (want_p, want_q) = (WANT_P, WANT_Q);
    let is_zero = |index: usize| zero[0] == Some(index) || zero[1] == Some(index);
    let len = if want_p { p.len() } else { q.len() };
    // Horner's rule runs from the highest data index down; leading zero strips add nothing.
    let Some(top) = (0..data.len()).rev().find(|&index| !is_zero(index)) else {
        p.fill(0);
        q.fill(0);
        return;
    };
    let columns_end = len - len % COLUMN;
    let mut start = 0;
    while start < columns_end {
        let range = start..start + COLUMN;
        let first = load_column(&data[top].as_ref()[range.clone()]);
        let (mut pp, mut qq) = (first, first);
        for index in (0..top).rev() {
            if is_zero(index) {
                if want_q {
                    for lane in &mut qq {
                        *lane = mul_g(*lane);
                    }
                }
                continue;
            }
            let d = load_column(&data[index].as_ref()[range.clone()]);
            for lane in 0..LANES {
                pp[lane] ^= d[lane];
                qq[lane] = mul_g(qq[lane]) ^ d[lane];
            }
        }
        if want_p {
            store_column(&mut p[range.clone()], &pp);
        }
        if want_q {
            store_column(&mut q[range], &qq);
        }
        start += COLUMN;
    }
    for byte in columns_end..len {
        let (mut pb, mut qb) = (0u8, 0u8);
        for index in (0..=top).rev() {
            let d = if is_zero(index) {
                0
            } else {
                data[index].as_ref()[byte]
            };
            pb ^= d;
            qb = gf::mul(qb, 2) ^ d;
        }
        if want_p {
            p[byte] = pb;
        }
        if want_q {
            q[byte] = qb;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Stripe-level operations.
// ---------------------------------------------------------------------------------------

fn check_lengths<S: AsRef<[u8]>>(expected: usize, strips: &[S]) -> Result<(), ParityError> {
    match strips
        .iter()
        .map(|s| s.as_ref().len())
        .enumerate()
        .find(|&(_, len)| len != expected)
    {
        Some((index, found)) => Err(ParityError::LengthMismatch {
            index,
            expected,
            found,
        }),
        None => Ok(()),
    }
}

fn check_len(index: usize, expected: usize, found: usize) -> Result<(), ParityError> {
    if expected == found {
        Ok(())
    } else {
        Err(ParityError::LengthMismatch {
            index,
            expected,
            found,
        })
    }
}

/// Computes P and/or Q of `data` into the given outputs. A data slot in `zero` counts as all
/// zeros (used while recovering a lost strip). Lengths are checked by the callers.
fn syndromes<S: AsRef<[u8]>>(
    data: &[S],
    zero: [Option<usize>; 2],
    p: Option<&mut [u8]>,
    q: Option<&mut [u8]>,
) {
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx2")]
        fn avx2<S: AsRef<[u8]>, const WANT_P: bool, const WANT_Q: bool>(
            data: &[S],
            zero: [Option<usize>; 2],
            p: &mut [u8],
            q: &mut [u8],
        ) {
            syndromes_portable::<S, WANT_P, WANT_Q>(data, zero, p, q)
        }
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: as in `multiversion!`: safe code that needs only AVX2, detected here.
            unsafe {
                match (p, q) {
                    (Some(p), Some(q)) => avx2::<S, true, true>(data, zero, p, q),
                    (Some(p), None) => avx2::<S, true, false>(data, zero, p, &mut []),
                    (None, Some(q)) => avx2::<S, false, true>(data, zero, &mut [], q),
                    (None, None) => {}
                }
            }
            return;
        }
    }
    match (p, q) {
        (Some(p), Some(q)) => syndromes_portable::<S, true, true>(data, zero, p, q),
        (Some(p), None) => syndromes_portable::<S, true, false>(data, zero, p, &mut []),
        (None, Some(q)) => syndromes_portable::<S, false, true>(data, zero, &mut [], q),
        (None, None) => {}
    }
}

/// `dst ^= src`.
pub fn xor_into(dst: &mut [u8], src: &[u8]) -> Result<(), ParityError> {
    check_len(1, dst.len(), src.len())?;
    xor_kernel(dst, src);
    Ok(())
}

/// `dst ^= coefficient · src` in GF(2⁸).
pub fn gf_mul_acc(dst: &mut [u8], src: &[u8], coefficient: u8) -> Result<(), ParityError> {
    check_len(1, dst.len(), src.len())?;
    mul_acc_kernel(dst, src, Multiplier::new(coefficient));
    Ok(())
}

/// RAID5 parity: `p = ⊕ data`.
pub fn compute_p<S: AsRef<[u8]>>(data: &[S], p: &mut [u8]) -> Result<(), ParityError> {
    if data.is_empty() {
        return Err(ParityError::TooFewData { min: 1, found: 0 });
    }
    check_lengths(p.len(), data)?;
    syndromes(data, [None; 2], Some(p), None);
    Ok(())
}

/// RAID6 parities: `p = ⊕ Dᵢ`, `q = ⊕ gⁱ·Dᵢ`.
pub fn compute_pq<S: AsRef<[u8]>>(
    data: &[S],
    p: &mut [u8],
    q: &mut [u8],
) -> Result<(), ParityError> {
    if data.is_empty() {
        return Err(ParityError::TooFewData { min: 1, found: 0 });
    }
    if data.len() > RAID6_MAX_DATA {
        return Err(ParityError::TooManyData(data.len()));
    }
    check_lengths(p.len(), data)?;
    check_len(data.len() + 1, p.len(), q.len())?;
    syndromes(data, [None; 2], Some(p), Some(q));
    Ok(())
}

/// RAID5 read-modify-write: folds the change of one data strip from `old` to `new` into P.
pub fn update_p(p: &mut [u8], old: &[u8], new: &[u8]) -> Result<(), ParityError> {
    check_len(1, p.len(), old.len())?;
    check_len(2, p.len(), new.len())?;
    xor_kernel(p, old);
    xor_kernel(p, new);
    Ok(())
}

/// RAID6 read-modify-write: folds the change of data strip `data_index` from `old` to `new`
/// into P and Q.
pub fn update_pq(
    p: &mut [u8],
    q: &mut [u8],
    data_index: usize,
    old: &[u8],
    new: &[u8],
) -> Result<(), ParityError> {
    if data_index >= RAID6_MAX_DATA {
        return Err(ParityError::TooManyData(data_index + 1));
    }
    check_len(1, p.len(), q.len())?;
    check_len(2, p.len(), old.len())?;
    check_len(3, p.len(), new.len())?;
    rmw_pq_kernel(p, q, old, new, Multiplier::new(gf::pow_g(data_index)));
    Ok(())
}

/// Which parity a stripe carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// Data strips then P.
    Raid5,
    /// Data strips then P then Q.
    Raid6,
}

impl Scheme {
    pub const fn parity_strips(self) -> usize {
        match self {
            Scheme::Raid5 => 1,
            Scheme::Raid6 => 2,
        }
    }
}

/// Rebuilds the strips in `lost` (slot indices: data `0..k`, then P, then Q) from the
/// others, in place; the lost strips' buffers hold garbage on entry. Any one loss is
/// recovered for RAID5, any one or two for RAID6.
pub fn reconstruct(
    scheme: Scheme,
    strips: &mut [&mut [u8]],
    lost: &[usize],
) -> Result<(), ParityError> {
    let parity = scheme.parity_strips();
    let total = strips.len();
    let data_count = total.saturating_sub(parity);
    if data_count < 1 {
        return Err(ParityError::TooFewData {
            min: 1,
            found: data_count,
        });
    }
    if scheme == Scheme::Raid6 && data_count > RAID6_MAX_DATA {
        return Err(ParityError::TooManyData(data_count));
    }
    if lost.len() > parity {
        return Err(ParityError::TooManyLost {
            lost: lost.len(),
            parity,
        });
    }
    if let Some(&slot) = lost.iter().find(|&&slot| slot >= total) {
        return Err(ParityError::LostOutOfRange {
            slot,
            strips: total,
        });
    }
    let (first, second) = match *lost {
        [] => return Ok(()),
        [a] => (a, None),
        [a, b] if a == b => return Err(ParityError::DuplicateLost(a)),
        [a, b] => (a.min(b), Some(a.max(b))),
        _ => unreachable!("checked against the parity count above"),
    };
    let len = strips[0].len();
    check_lengths(len, strips)?;

    let p_slot = data_count;
    // Take the lost buffers out, so the survivors can be read while they are written; the
    // emptied slots are the ones `syndromes` is told to treat as zero.
    let lost_a = std::mem::take(&mut strips[first]);
    let mut lost_b = second.map(|slot| std::mem::take(&mut strips[slot]));
    let (data, parity_strips) = strips.split_at(data_count);
    let p: &[u8] = parity_strips.first().map(|p| &**p).unwrap_or_default();
    let q = parity_strips.get(1);
    let zero = [Some(first), second];

    let q = q.map(|q| &**q).unwrap_or_default();
    match (first, second) {
        // One data strip: XOR of the survivors (P included).
        (a, None) if a < data_count => {
            syndromes(data, zero, Some(&mut *lost_a), None);
            xor_kernel(lost_a, p);
        }
        // P or Q alone: recompute from the data.
        (a, None) if a == p_slot => syndromes(data, zero, Some(&mut *lost_a), None),
        (_, None) => syndromes(data, zero, None, Some(&mut *lost_a)),
        // Two data strips a < b: with Px = P ⊕ P' and Qx = Q ⊕ Q' (P', Q' computed with
        // zeros for the lost strips), Dₐ ⊕ D_b = Px and gᵃDₐ ⊕ gᵇD_b = Qx, so
        // D_b = (gᵃ⊕gᵇ)⁻¹·(gᵃ·Px ⊕ Qx) and Dₐ = Px ⊕ D_b.
        (a, Some(b)) if b < data_count => {
            let lost_b = lost_b.as_deref_mut().unwrap_or_default();
            syndromes(data, zero, Some(&mut *lost_a), Some(&mut *lost_b));
            xor_kernel(lost_a, p);
            xor_kernel(lost_b, q);
            let g_a = gf::pow_g(a);
            let denominator_inv = gf::inv(g_a ^ gf::pow_g(b));
            two_data_kernel(
                lost_a,
                lost_b,
                Multiplier::new(gf::mul(g_a, denominator_inv)),
                Multiplier::new(denominator_inv),
            );
        }
        // A data strip and P: Qx = Q ⊕ Q' = gᵃ·Dₐ, so Dₐ = g⁻ᵃ·Qx; then P = P' ⊕ Dₐ.
        (a, Some(b)) if a < data_count && b == p_slot => {
            let p_out = lost_b.as_deref_mut().unwrap_or_default();
            syndromes(data, zero, Some(&mut *p_out), Some(&mut *lost_a));
            xor_kernel(lost_a, q);
            scale_kernel(lost_a, Multiplier::new(gf::inv(gf::pow_g(a))));
            xor_kernel(p_out, lost_a);
        }
        // A data strip and Q: Dₐ from P as in RAID5; then Q = Q' ⊕ gᵃ·Dₐ.
        (a, Some(_)) if a < data_count => {
            let q_out = lost_b.as_deref_mut().unwrap_or_default();
            syndromes(data, zero, Some(&mut *lost_a), Some(&mut *q_out));
            xor_kernel(lost_a, p);
            mul_acc_kernel(q_out, lost_a, Multiplier::new(gf::pow_g(a)));
        }
        // P and Q: recompute both.
        _ => {
            let q_out = lost_b.as_deref_mut().unwrap_or_default();
            syndromes(data, zero, Some(&mut *lost_a), Some(q_out));
        }
    }
    strips[first] = lost_a;
    if let (Some(slot), Some(b)) = (second, lost_b) {
        strips[slot] = b;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Measurement, for the lead's benchmark: parity throughput next to memcpy bandwidth measured
// in the same run on the same buffers' sizes.
// ---------------------------------------------------------------------------------------

/// Throughputs in GiB/s of *data* processed (bytes of input strips per second; for memcpy,
/// bytes copied).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ParityRates {
    /// `copy_from_slice` of 1 MiB.
    pub memcpy_gib_s: f64,
    /// `xor_into` of one 1 MiB buffer into another.
    pub xor_gib_s: f64,
    /// RAID5 P over 4 data strips of 256 KiB (1 MiB of data).
    pub raid5_p_gib_s: f64,
    /// RAID6 P+Q over 4 data strips of 256 KiB.
    pub raid6_pq_gib_s: f64,
    /// RAID6 recovery of two lost data strips, 4 data strips of 256 KiB.
    pub raid6_recover2_gib_s: f64,
}

impl ParityRates {
    /// The slowest parity generation rate (P, P+Q) relative to memcpy.
    pub fn worst_generation_vs_memcpy(&self) -> f64 {
        self.raid5_p_gib_s.min(self.raid6_pq_gib_s) / self.memcpy_gib_s
    }
}

const MEASURE_BUFFER: usize = 1 << 20;
const MEASURE_DATA_STRIPS: usize = 4;

/// Runs `step` (which processes `bytes` bytes) repeatedly for about `duration`; GiB/s.
fn rate(duration: Duration, bytes: usize, mut step: impl FnMut()) -> f64 {
    step(); // warm caches and page in the buffers
    let start = Instant::now();
    let mut rounds = 0u64;
    while start.elapsed() < duration || rounds == 0 {
        for _ in 0..4 {
            step();
        }
        rounds += 4;
    }
    let seconds = start.elapsed().as_secs_f64();
    (rounds as f64 * bytes as f64) / seconds / (1u64 << 30) as f64
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// memcpy bandwidth with 1 MiB buffers, measured for about `duration`.
pub fn memcpy_rate_gib_s(duration: Duration) -> f64 {
    let src = pattern(MEASURE_BUFFER, 1);
    let mut dst = vec![0u8; MEASURE_BUFFER];
    rate(duration, MEASURE_BUFFER, || {
        dst.copy_from_slice(std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    })
}

/// `xor_into` throughput with 1 MiB buffers, measured for about `duration`.
pub fn xor_rate_gib_s(duration: Duration) -> f64 {
    let src = pattern(MEASURE_BUFFER, 2);
    let mut dst = pattern(MEASURE_BUFFER, 3);
    rate(duration, MEASURE_BUFFER, || {
        let _ = xor_into(&mut dst, std::hint::black_box(&src));
        std::hint::black_box(&mut dst);
    })
}

fn measure_stripe() -> (Vec<Vec<u8>>, Vec<u8>, Vec<u8>) {
    let strip = MEASURE_BUFFER / MEASURE_DATA_STRIPS;
    let data = (0..MEASURE_DATA_STRIPS)
        .map(|i| pattern(strip, 10 + i as u64))
        .collect();
    (data, vec![0; strip], vec![0; strip])
}

/// RAID5 P throughput (1 MiB of data in 4 strips), measured for about `duration`.
pub fn raid5_rate_gib_s(duration: Duration) -> f64 {
    let (data, mut p, _) = measure_stripe();
    rate(duration, MEASURE_BUFFER, || {
        let _ = compute_p(std::hint::black_box(&data), &mut p);
        std::hint::black_box(&mut p);
    })
}

/// RAID6 P+Q throughput (1 MiB of data in 4 strips), measured for about `duration`.
pub fn raid6_rate_gib_s(duration: Duration) -> f64 {
    let (data, mut p, mut q) = measure_stripe();
    rate(duration, MEASURE_BUFFER, || {
        let _ = compute_pq(std::hint::black_box(&data), &mut p, &mut q);
        std::hint::black_box((&mut p, &mut q));
    })
}

/// RAID6 two-data-strip recovery throughput (1 MiB of data in 4 strips).
pub fn raid6_recover_rate_gib_s(duration: Duration) -> f64 {
    let (mut data, mut p, mut q) = measure_stripe();
    let _ = compute_pq(&data, &mut p, &mut q);
    let mut strips: Vec<&mut [u8]> = data.iter_mut().map(Vec::as_mut_slice).collect();
    strips.push(&mut p);
    strips.push(&mut q);
    rate(duration, MEASURE_BUFFER, || {
        let _ = reconstruct(Scheme::Raid6, &mut strips, &[0, 2]);
        std::hint::black_box(&mut strips);
    })
}

/// Every rate, each measured for about `each` (use a few hundred ms in release builds).
pub fn measure_parity_rate_for(each: Duration) -> ParityRates {
    ParityRates {
        memcpy_gib_s: memcpy_rate_gib_s(each),
        xor_gib_s: xor_rate_gib_s(each),
        raid5_p_gib_s: raid5_rate_gib_s(each),
        raid6_pq_gib_s: raid6_rate_gib_s(each),
        raid6_recover2_gib_s: raid6_recover_rate_gib_s(each),
    }
}

/// Every rate, 200 ms each (about one second in all): what the benchmark calls.
pub fn measure_parity_rate() -> ParityRates {
    measure_parity_rate_for(Duration::from_millis(200))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random(len: usize, seed: u64) -> Vec<u8> {
        pattern(len, seed.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    }

    /// Byte-at-a-time reference using only the tables.
    fn reference_pq(data: &[Vec<u8>]) -> (Vec<u8>, Vec<u8>) {
        let len = data[0].len();
        let mut p = vec![0u8; len];
        let mut q = vec![0u8; len];
        for (i, strip) in data.iter().enumerate() {
            for (j, &byte) in strip.iter().enumerate() {
                p[j] ^= byte;
                q[j] ^= gf::mul(gf::pow_g(i), byte);
            }
        }
        (p, q)
    }

    #[test]
    fn gf_tables() {
        assert_eq!(gf::pow_g(0), 1);
        assert_eq!(gf::pow_g(8), 0x1d);
        assert_eq!(gf::pow_g(255), 1);
        for a in 1..=255u8 {
            assert_eq!(gf::mul(a, gf::inv(a)), 1, "inverse of {a}");
            assert_eq!(gf::mul(a, 1), a);
            assert_eq!(gf::mul(a, 0), 0);
        }
        // The powers of g are all distinct: g generates the field.
        let mut seen = [false; 256];
        for n in 0..255 {
            assert!(!seen[gf::pow_g(n) as usize]);
            seen[gf::pow_g(n) as usize] = true;
        }
        // The SWAR multipliers agree with the table for every constant and byte.
        for c in 0..=255u8 {
            let by = Multiplier::new(c);
            for x in (0..=255u8).step_by(7) {
                let word =
                    u64::from_ne_bytes([x, x ^ 0x80, 0xff, 0, 1, x.wrapping_mul(3), 0x80, x]);
                let product = by.apply(word).to_ne_bytes();
                for (k, byte) in word.to_ne_bytes().iter().enumerate() {
                    assert_eq!(product[k], gf::mul(c, *byte));
                }
            }
        }
    }

    #[test]
    fn p_and_q_match_reference() {
        // Lengths that are not multiples of COLUMN (or of 8) exercise the byte tails.
        for (n, len) in [(1, 64), (2, 13), (3, 4096), (5, 10_007), (17, 520)] {
            let data: Vec<Vec<u8>> = (0..n).map(|i| random(len, i as u64 + 1)).collect();
            let (ref_p, ref_q) = reference_pq(&data);
            let mut p = vec![0xaa; len];
            let mut q = vec![0x55; len];
            compute_pq(&data, &mut p, &mut q).unwrap();
            assert_eq!(p, ref_p);
            assert_eq!(q, ref_q);
            let mut p5 = vec![0; len];
            compute_p(&data, &mut p5).unwrap();
            assert_eq!(p5, ref_p);
        }
    }

    /// On an AVX2 machine the dispatchers never run the portable builds; check them directly.
    #[test]
    fn portable_kernels_agree_with_dispatched() {
        let len = 1000;
        let data: Vec<Vec<u8>> = (0..6).map(|i| random(len, 70 + i)).collect();
        let (ref_p, ref_q) = reference_pq(&data);
        let (mut p, mut q) = (vec![0u8; len], vec![0u8; len]);
        syndromes_portable::<_, true, true>(&data, [None; 2], &mut p, &mut q);
        assert_eq!((&p, &q), (&ref_p, &ref_q));
        let mut p_only = vec![0u8; len];
        syndromes_portable::<_, true, false>(&data, [None; 2], &mut p_only, &mut []);
        assert_eq!(p_only, ref_p);
        let mut q_skip = vec![0u8; len];
        let mut q_skip_dispatched = vec![0u8; len];
        syndromes_portable::<_, false, true>(&data, [Some(1), Some(5)], &mut [], &mut q_skip);
        syndromes(
            &data,
            [Some(1), Some(5)],
            None,
            Some(&mut q_skip_dispatched),
        );
        assert_eq!(q_skip, q_skip_dispatched);

        let by = Multiplier::new(0x8e);
        let (mut a, mut b) = (data[0].clone(), data[0].clone());
        scale_portable(&mut a, by);
        scale_kernel(&mut b, by);
        assert_eq!(a, b);
        mul_acc_portable(&mut a, &data[1], by);
        mul_acc_kernel(&mut b, &data[1], by);
        assert_eq!(a, b);
        xor_portable(&mut a, &data[2]);
        xor_kernel(&mut b, &data[2]);
        assert_eq!(a, b);
        let (mut p1, mut q1, mut p2, mut q2) = (p.clone(), q.clone(), p.clone(), q.clone());
        rmw_pq_portable(&mut p1, &mut q1, &data[3], &data[4], by);
        rmw_pq_kernel(&mut p2, &mut q2, &data[3], &data[4], by);
        assert_eq!((p1, q1), (p2, q2));
        let other = Multiplier::new(3);
        let mut p_copy = p.clone();
        two_data_portable(&mut a, &mut p, by, other);
        two_data_kernel(&mut b, &mut p_copy, by, other);
        assert_eq!((a, p), (b, p_copy));
    }

    #[test]
    fn length_and_count_checks() {
        let a = [0u8; 16];
        let b = vec![0u8; 8];
        let mut p = vec![0u8; 16];
        let mut q = vec![0u8; 16];
        assert_eq!(
            compute_p(&[&a[..], &b[..]], &mut p),
            Err(ParityError::LengthMismatch {
                index: 1,
                expected: 16,
                found: 8
            })
        );
        let empty: [&[u8]; 0] = [];
        assert!(matches!(
            compute_pq(&empty, &mut p, &mut q),
            Err(ParityError::TooFewData { .. })
        ));
        assert!(xor_into(&mut p, &b).is_err());
        let mut short_q = vec![0u8; 15];
        assert!(compute_pq(&[&a[..]], &mut p, &mut short_q).is_err());
        let many: Vec<&[u8]> = vec![&a[..]; 256];
        assert_eq!(
            compute_pq(&many, &mut p, &mut q),
            Err(ParityError::TooManyData(256))
        );
        let mut strips: Vec<Vec<u8>> = vec![vec![0u8; 16]; 4];
        let mut refs: Vec<&mut [u8]> = strips.iter_mut().map(|s| &mut s[..]).collect();
        assert_eq!(
            reconstruct(Scheme::Raid5, &mut refs, &[0, 1]),
            Err(ParityError::TooManyLost { lost: 2, parity: 1 })
        );
        assert_eq!(
            reconstruct(Scheme::Raid6, &mut refs, &[1, 1]),
            Err(ParityError::DuplicateLost(1))
        );
        assert_eq!(
            reconstruct(Scheme::Raid6, &mut refs, &[4]),
            Err(ParityError::LostOutOfRange { slot: 4, strips: 4 })
        );
        assert_eq!(reconstruct(Scheme::Raid6, &mut refs, &[]), Ok(()));
        let mut odd = vec![0u8; 3];
        refs[3] = &mut odd;
        assert!(matches!(
            reconstruct(Scheme::Raid6, &mut refs, &[0]),
            Err(ParityError::LengthMismatch { index: 3, .. })
        ));
        let mut tiny: Vec<&mut [u8]> = Vec::new();
        assert!(reconstruct(Scheme::Raid5, &mut tiny, &[]).is_err());
    }

    /// Builds a full stripe (data, P, Q), wipes the lost strips and checks they come back.
    fn check_recovery(scheme: Scheme, data_count: usize, len: usize, lost: &[usize]) {
        let mut strips: Vec<Vec<u8>> = (0..data_count)
            .map(|i| random(len, (data_count * 100 + i) as u64))
            .collect();
        let (p, q) = reference_pq(&strips);
        strips.push(p);
        if scheme == Scheme::Raid6 {
            strips.push(q);
        }
        let original = strips.clone();
        for &slot in lost {
            strips[slot].fill(0xe5);
        }
        let mut refs: Vec<&mut [u8]> = strips.iter_mut().map(|s| &mut s[..]).collect();
        reconstruct(scheme, &mut refs, lost).unwrap();
        assert!(
            strips == original,
            "{scheme:?} with {data_count} data strips failed to recover {lost:?}"
        );
    }

    #[test]
    fn raid5_recovers_every_single_loss() {
        for members in 3..=8 {
            for lost in 0..members {
                check_recovery(Scheme::Raid5, members - 1, 1000, &[lost]);
            }
        }
    }

    #[test]
    fn raid6_recovers_every_single_and_double_loss() {
        for members in 4..=8 {
            let data = members - 2;
            for a in 0..members {
                check_recovery(Scheme::Raid6, data, 4104, &[a]);
                for b in 0..members {
                    if a != b {
                        // Both orders: the API must not care.
                        check_recovery(Scheme::Raid6, data, 4104, &[a, b]);
                    }
                }
            }
        }
        // A wide stripe with losses near the top index, and byte tails.
        check_recovery(Scheme::Raid6, 30, 77, &[28, 29]);
        check_recovery(Scheme::Raid6, 30, 77, &[0, 30]);
        check_recovery(Scheme::Raid6, 30, 77, &[29, 31]);
    }

    #[test]
    fn read_modify_write_matches_recompute() {
        let data_count = 5;
        let len = 1000;
        let mut data: Vec<Vec<u8>> = (0..data_count).map(|i| random(len, 40 + i)).collect();
        let (mut p, mut q) = reference_pq(&data);
        for index in 0..data_count as usize {
            let new = random(len, 90 + index as u64);
            let mut p5 = p.clone();
            update_p(&mut p5, &data[index], &new).unwrap();
            update_pq(&mut p, &mut q, index, &data[index], &new).unwrap();
            data[index] = new;
            let (ref_p, ref_q) = reference_pq(&data);
            assert_eq!(p, ref_p);
            assert_eq!(p5, ref_p);
            assert_eq!(q, ref_q);
        }
        assert!(update_pq(&mut p, &mut q, 255, &data[0], &data[1]).is_err());
        let mut acc = vec![0u8; 9];
        gf_mul_acc(&mut acc, &[3u8; 9], 7).unwrap();
        assert_eq!(acc, vec![gf::mul(3, 7); 9]);
    }

    /// Prints the rates; in release builds this is the number the lead tracks. Asserts only
    /// sanity (debug builds are far slower than memcpy).
    #[test]
    fn parity_rate() {
        let each = if cfg!(debug_assertions) {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(300)
        };
        let rates = measure_parity_rate_for(each);
        println!(
            "parity_rate: memcpy {:.2} GiB/s, xor {:.2} GiB/s, raid5 P {:.2} GiB/s, \
             raid6 P+Q {:.2} GiB/s, raid6 2-data recovery {:.2} GiB/s; \
             worst generation / memcpy = {:.0}%",
            rates.memcpy_gib_s,
            rates.xor_gib_s,
            rates.raid5_p_gib_s,
            rates.raid6_pq_gib_s,
            rates.raid6_recover2_gib_s,
            rates.worst_generation_vs_memcpy() * 100.0
        );
        for rate in [
            rates.memcpy_gib_s,
            rates.xor_gib_s,
            rates.raid5_p_gib_s,
            rates.raid6_pq_gib_s,
            rates.raid6_recover2_gib_s,
        ] {
            assert!(rate.is_finite() && rate > 0.0);
        }
    }
}
