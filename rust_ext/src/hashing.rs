//! Charger secrets and API tokens: SHA-256 digests and constant-time comparison.
//!
//! Secrets are never stored (ARCHITECTURE rule 5): only `digest(secret)` is, and a presented
//! secret is checked with `verify`, whose running time does not depend on where the digests
//! first differ.

use sha2::digest::generic_array::GenericArray;
use sha2::{compress256, Digest, Sha256};
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

/// SHA-256 of (one 64-byte block already compressed into `state`) followed by `data`.
fn continue_sha256(state: [u32; 8], data: &[u8]) -> [u8; 32] {
    let mut h = state;
    let full = data.len() / 64 * 64;
    for block in data[..full].chunks_exact(64) {
        compress256(&mut h, &[*GenericArray::from_slice(block)]);
    }
    // The padding of FIPS 180-4 section 5.1.1, counting the block of `state` in the length.
    let mut tail = Vec::with_capacity(128);
    tail.extend_from_slice(&data[full..]);
    tail.push(0x80);
    while tail.len() % 64 != 56 {
        tail.push(0);
    }
    tail.extend_from_slice(&(((64 + data.len()) as u64) * 8).to_be_bytes());
    for block in tail.chunks_exact(64) {
        compress256(&mut h, &[*GenericArray::from_slice(block)]);
    }
    let mut out = [0u8; 32];
    for (word, bytes) in h.iter().zip(out.chunks_exact_mut(4)) {
        bytes.copy_from_slice(&word.to_be_bytes());
    }
    out
}

fn words(bytes: &[u8]) -> [u32; 8] {
    let mut w = [0u32; 8];
    for (word, chunk) in w.iter_mut().zip(bytes.chunks_exact(4)) {
        *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
    w
}

/// HMAC-SHA256(key, message) from the key's schedule: `state` is the two SHA-256 chaining
/// states (big-endian words) after compressing `key XOR ipad` and `key XOR opad` (RFC 2104
/// section 4's precomputation; `events/signing.py` makes it). `None` unless `state` is 64 bytes.
pub fn hmac_with_state(state: &[u8], message: &[u8]) -> Option<[u8; 32]> {
    if state.len() != 64 {
        return None;
    }
    let inner = continue_sha256(words(&state[..32]), message);
    Some(continue_sha256(words(&state[32..]), &inner))
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

    /// The schedule of `key` (at most 64 bytes), as `events/signing.py`'s hmac_state makes it.
    fn schedule(key: &[u8]) -> Vec<u8> {
        let iv: [u32; 8] = [
            0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
            0x5be0cd19,
        ];
        let mut out = Vec::new();
        for pad in [0x36u8, 0x5c] {
            let mut block = [pad; 64];
            for (b, k) in block.iter_mut().zip(key) {
                *b ^= k;
            }
            let mut h = iv;
            compress256(&mut h, &[*GenericArray::from_slice(&block)]);
            out.extend(h.iter().flat_map(|w| w.to_be_bytes()));
        }
        out
    }

    #[test]
    fn hmac_rfc4231_vectors() {
        // RFC 4231 test cases 1 and 2, and a message of several blocks (case 6's data with a
        // short key) crossing the padding boundary.
        let tag = hmac_with_state(&schedule(&[0x0b; 20]), b"Hi There").unwrap();
        assert_eq!(
            hex(&tag),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let tag = hmac_with_state(&schedule(b"Jefe"), b"what do ya want for nothing?").unwrap();
        assert_eq!(
            hex(&tag),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert!(hmac_with_state(&[0u8; 63], b"").is_none());
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
