//! A SHA-256 digest as a value, not a string: made from bytes or a finished hasher,
//! parsed from hex (either case), shown as lower-case hex (what `.bmap` files and
//! bmaptool use).

use sha2::{Digest, Sha256};
use std::fmt;

/// The 32 bytes of a SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256Digest([u8; 32]);

impl Sha256Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        Self::finish(Sha256::new_with_prefix(bytes))
    }

    /// The digest `hasher` has computed so far (it is consumed).
    pub fn finish(hasher: Sha256) -> Self {
        Self(hasher.finalize().into())
    }

    /// The digest `hasher` has computed so far; `hasher` starts afresh.
    pub fn finish_reset(hasher: &mut Sha256) -> Self {
        Self(hasher.finalize_reset().into())
    }

    /// Parses 64 hex digits (upper or lower case); `None` for anything else.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let mut out = [0u8; 32];
        hex::decode_to_slice(text, &mut out).ok()?;
        Some(Self(out))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sha256Digest({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_matches_sha256sum() {
        // printf abc | sha256sum
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(Sha256Digest::of(b"abc").to_string(), abc);
        assert_eq!(Sha256Digest::parse_hex(abc), Some(Sha256Digest::of(b"abc")));
        assert_eq!(
            Sha256Digest::parse_hex(&abc.to_ascii_uppercase()),
            Some(Sha256Digest::of(b"abc"))
        );
        assert_eq!(Sha256Digest::parse_hex(&abc[1..]), None);
        assert_eq!(Sha256Digest::parse_hex(&abc.replace('a', "g")), None);
    }
}
