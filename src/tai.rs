//! TAI64N, as skalibs writes it: s6-log's archive names and `T` prefixes, and the stamps in
//! s6-supervise's status record. One encoder for all of them.
//!
//! A label is 2^62 + TAI seconds (8 bytes) and nanoseconds (4 bytes), big-endian. Debian's
//! skalibs converts the system clock with its leap-second table, so TAI is UNIX time + 10 s +
//! 27 leap seconds: 37 s ahead (checked against `s6-tai64n` of Debian trixie's s6 2.11.3).

use std::time::Duration;

/// TAI − UTC since 2017-01-01.
pub const OFFSET_SECS: u64 = 37;

/// The 12-byte packed label (s6's `tain_pack`) of a time since the UNIX epoch.
pub fn pack(since_epoch: Duration) -> [u8; 12] {
    let mut b = [0u8; 12];
    b[..8].copy_from_slice(&((1u64 << 62) + since_epoch.as_secs() + OFFSET_SECS).to_be_bytes());
    b[8..].copy_from_slice(&since_epoch.subsec_nanos().to_be_bytes());
    b
}

/// The external form: `@` and 24 hex digits.
pub fn label(since_epoch: Duration) -> String {
    let mut s = String::with_capacity(25);
    s.push('@');
    for b in pack(since_epoch) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_carry_the_leap_seconds() {
        assert_eq!(label(Duration::new(1, 2)), "@400000000000002600000002");
        assert_eq!(&pack(Duration::new(1, 2))[..8], &((1u64 << 62) + 38).to_be_bytes());
    }
}
