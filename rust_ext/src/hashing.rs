//! Charger secrets and API tokens: SHA-256 digests and constant-time comparison.
//!
//! Secrets are never stored (ARCHITECTURE rule 5): only `digest(secret)` is, and a presented
//! secret is checked with `verify`, whose running time does not depend on where the digests
//! first differ.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The SHA-256 digest of `secret`, 32 bytes.
pub fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Whether `secret` hashes to `expected`, compared in constant time.
///
/// A digest of the wrong length never matches (and is rejected without hashing, which leaks
/// only the length of the stored value, a public constant).
pub fn verify(secret: &[u8], expected: &[u8]) -> bool {
    if expected.len() != 32 {
        return false;
    }
    digest(secret).ct_eq(expected).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn nist_vectors() {
        // FIPS 180-2 examples and the empty message.
        assert_eq!(
            hex(&digest(b"")),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            hex(&digest(
                b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"
            )),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn verify_accepts_only_the_secret() {
        let d = digest(b"123456789012345678901234");
        assert!(verify(b"123456789012345678901234", &d));
        assert!(!verify(b"123456789012345678901235", &d));
        assert!(!verify(b"123456789012345678901234", &d[..31]));
        assert!(!verify(b"", &[0u8; 32]));
    }
}
