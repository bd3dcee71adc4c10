//! Little-endian field access that cannot panic.
//!
//! Wire views hold fixed-size arrays, so the offsets used with these helpers
//! are always in bounds; the helpers still use checked slicing so that no
//! input can ever turn a mistake into a panic. Reads outside the buffer yield
//! zero; writes outside the buffer are dropped (and trip a debug assertion,
//! because only a programming error can cause one).

pub(crate) fn array_at<const N: usize>(buf: &[u8], offset: usize) -> [u8; N] {
    buf.get(offset..)
        .and_then(|rest| rest.first_chunk::<N>())
        .copied()
        .unwrap_or([0; N])
}

pub(crate) fn u8_at(buf: &[u8], offset: usize) -> u8 {
    buf.get(offset).copied().unwrap_or(0)
}

pub(crate) fn u16_at(buf: &[u8], offset: usize) -> u16 {
    u16::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn u32_at(buf: &[u8], offset: usize) -> u32 {
    u32::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn u64_at(buf: &[u8], offset: usize) -> u64 {
    u64::from_le_bytes(array_at(buf, offset))
}

pub(crate) fn put_array<const N: usize>(buf: &mut [u8], offset: usize, value: [u8; N]) {
    match buf
        .get_mut(offset..)
        .and_then(|rest| rest.first_chunk_mut::<N>())
    {
        Some(dst) => *dst = value,
        None => debug_assert!(
            false,
            "field write at {offset} past a {}-byte buffer",
            buf.len()
        ),
    }
}

pub(crate) fn put_u8(buf: &mut [u8], offset: usize, value: u8) {
    put_array(buf, offset, [value]);
}

pub(crate) fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    put_array(buf, offset, value.to_le_bytes());
}

pub(crate) fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    put_array(buf, offset, value.to_le_bytes());
}

pub(crate) fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    put_array(buf, offset, value.to_le_bytes());
}

pub(crate) fn put_u128(buf: &mut [u8], offset: usize, value: u128) {
    put_array(buf, offset, value.to_le_bytes());
}

/// Copies `src` into the `field_len`-byte field at `offset`, truncating it if
/// it is longer and filling the rest of the field with `pad`.
///
/// NVMe text fields are fixed-width: SN/MN/FR are space padded, NQNs and
/// transport addresses are NUL padded.
pub(crate) fn put_padded(buf: &mut [u8], offset: usize, field_len: usize, src: &[u8], pad: u8) {
    let Some(field) = offset
        .checked_add(field_len)
        .and_then(|end| buf.get_mut(offset..end))
    else {
        debug_assert!(
            false,
            "text field at {offset} past a {}-byte buffer",
            buf.len()
        );
        return;
    };
    let copied = src.len().min(field_len);
    let (head, tail) = field.split_at_mut(copied);
    head.copy_from_slice(src.get(..copied).unwrap_or_default());
    tail.fill(pad);
}
