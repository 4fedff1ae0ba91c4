//! Stateless temporary credentials: access key ids with a MAC check, derived secrets, and MAC'd session
//! tokens. Nothing here touches the state store.
//!
//! Every MAC is HMAC-SHA256 under the master key, over inputs from disjoint domains: a session-token blob
//! starts with the byte `0x01`, a secret input with `secret:`, a key-id check input with `akid:`.
//!
//! - **Access key id**: `ASIA` + 12 random characters + 4 check characters, all from `A-Z2-7` (20 in all,
//!   like AWS's). The check characters are the first four bytes of `HMAC(master, "akid:" + first 16)`, each
//!   mod 32, so an id this server did not mint is refused before any signature work (one in 2^20 random ids
//!   gets past the check, and then still needs a secret it cannot know).
//! - **Secret access key**: `base64(HMAC(master, "secret:" + access_key_id))[..40]`.
//! - **Session token**: `base64url(blob ‖ HMAC(master, blob))` without padding, where `blob` is `0x01` (the
//!   format version) followed by the JSON of [`TokenBody`]. The MAC is checked (in constant time) before the
//!   JSON is read.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use rand::Rng as _;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

type HmacSha256 = Hmac<Sha256>;

/// The alphabet of key ids and role ids (RFC 4648 base32).
const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
/// Prefix of temporary access key ids.
pub(crate) const TEMP_KEY_PREFIX: &str = "ASIA";
const KEY_RANDOM: usize = 12;
const KEY_CHECK: usize = 4;
const KEY_LEN: usize = TEMP_KEY_PREFIX.len() + KEY_RANDOM + KEY_CHECK;
/// Token format version, the first byte of every blob.
const TOKEN_VERSION: u8 = 1;
const MAC_LEN: usize = 32;
/// Longer tokens are refused unread (a maximal session policy and tag set encodes to about 14 KB).
pub(crate) const MAX_TOKEN_LEN: usize = 32 * 1024;

fn mac(key: &[u8; 32], parts: &[&[u8]]) -> [u8; 32] {
    // HMAC accepts keys of any length.
    let mut m = <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().into()
}

/// `n` random characters of [`ALPHABET`].
pub(crate) fn random_chars(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])).collect()
}

fn check_chars(master: &[u8; 32], head: &str) -> [u8; KEY_CHECK] {
    let digest = mac(master, &[b"akid:", head.as_bytes()]);
    let mut out = [0u8; KEY_CHECK];
    for (o, d) in out.iter_mut().zip(digest) {
        *o = ALPHABET[usize::from(d % 32)];
    }
    out
}

/// A fresh temporary access key id.
pub(crate) fn new_access_key_id(master: &[u8; 32]) -> String {
    let head = format!("{TEMP_KEY_PREFIX}{}", random_chars(KEY_RANDOM));
    let check = check_chars(master, &head);
    let mut id = head;
    id.extend(check.iter().map(|&b| char::from(b)));
    id
}

/// Whether `id` is a temporary access key id this master key minted.
pub(crate) fn is_minted_key(master: &[u8; 32], id: &str) -> bool {
    if id.len() != KEY_LEN || !id.starts_with(TEMP_KEY_PREFIX) || !id.bytes().all(|b| ALPHABET.contains(&b)) {
        return false;
    }
    let (head, check) = id.split_at(KEY_LEN - KEY_CHECK);
    bool::from(check_chars(master, head).ct_eq(check.as_bytes()))
}

/// The secret access key of a temporary access key id.
pub(crate) fn derive_secret(master: &[u8; 32], access_key_id: &str) -> String {
    let mut s = STANDARD.encode(mac(master, &[b"secret:", access_key_id.as_bytes()]));
    s.truncate(40);
    s
}

/// What a session token carries. Field names are short: the token travels with every request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenBody {
    /// The access key id the token is bound to.
    pub k: String,
    /// Role ARN.
    pub r: String,
    /// Role id (`AROA...`): a role deleted and created again under the same name is another role.
    pub i: String,
    /// Session name.
    pub n: String,
    /// Session tags, in order, case preserved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub t: Vec<(String, String)>,
    /// Transitive tag keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub x: Vec<String>,
    /// The session policy as the caller wrote it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p: Option<String>,
    /// Expiry, epoch seconds.
    pub e: u64,
    /// Issue time, epoch seconds.
    pub a: u64,
    /// Source identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s: Option<String>,
}

/// Seals a token body.
pub(crate) fn seal(master: &[u8; 32], body: &TokenBody) -> String {
    let mut blob = Vec::with_capacity(256);
    blob.push(TOKEN_VERSION);
    // Serialising a struct of strings and integers cannot fail.
    if let Err(e) = serde_json::to_writer(&mut blob, body) {
        unreachable!("token body serialises: {e}");
    }
    let tag = mac(master, &[&blob]);
    blob.extend_from_slice(&tag);
    URL_SAFE_NO_PAD.encode(blob)
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsealed {
    /// Not a token of ours: bad encoding, version, length or MAC.
    Invalid,
}

/// Checks a token's MAC and returns the blob's MAC (the token's identity, for caching) and the bytes
/// to decode. The body is not parsed here.
pub(crate) fn verify(master: &[u8; 32], token: &str) -> Result<([u8; MAC_LEN], Vec<u8>), Unsealed> {
    if token.is_empty() || token.len() > MAX_TOKEN_LEN {
        return Err(Unsealed::Invalid);
    }
    let raw = URL_SAFE_NO_PAD.decode(token).map_err(|_| Unsealed::Invalid)?;
    if raw.len() < 1 + MAC_LEN {
        return Err(Unsealed::Invalid);
    }
    let (blob, given) = raw.split_at(raw.len() - MAC_LEN);
    let expected = mac(master, &[blob]);
    if !bool::from(expected.ct_eq(given)) || blob.first() != Some(&TOKEN_VERSION) {
        return Err(Unsealed::Invalid);
    }
    let mut blob = raw;
    blob.truncate(blob.len() - MAC_LEN);
    Ok((expected, blob))
}

/// Parses a verified blob.
pub(crate) fn decode(blob: &[u8]) -> Result<TokenBody, Unsealed> {
    serde_json::from_slice(blob.get(1..).unwrap_or_default()).map_err(|_| Unsealed::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn body() -> TokenBody {
        TokenBody {
            k: "ASIAAAAAAAAAAAAAAAAA".into(),
            r: "arn:aws:iam::000000000000:role/r".into(),
            i: "AROAEXAMPLE".into(),
            n: "s".into(),
            t: vec![("TenantId".into(), "blue".into())],
            x: vec!["TenantId".into()],
            p: None,
            e: 2000,
            a: 1000,
            s: None,
        }
    }

    #[test]
    fn minted_keys_carry_a_check() {
        let id = new_access_key_id(&KEY);
        assert_eq!(id.len(), 20);
        assert!(id.starts_with("ASIA"));
        assert!(is_minted_key(&KEY, &id));
        assert!(!is_minted_key(&[8; 32], &id), "another master key");
        // Changing any character breaks the check (the check characters themselves included).
        for i in 4..20 {
            let mut bytes = id.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let forged = String::from_utf8(bytes).expect("ascii");
            assert!(!is_minted_key(&KEY, &forged), "{forged}");
        }
        assert!(!is_minted_key(&KEY, "AKIAIOSFODNN7EXAMPLE"));
        assert!(!is_minted_key(&KEY, "ASIA"));
        assert!(!is_minted_key(&KEY, &format!("{id}A")));
        assert!(!is_minted_key(&KEY, &id.to_lowercase()));
    }

    #[test]
    fn secrets_are_derived_and_distinct() {
        let a = derive_secret(&KEY, "ASIAAAAAAAAAAAAAAAAA");
        assert_eq!(a.len(), 40);
        assert_eq!(a, derive_secret(&KEY, "ASIAAAAAAAAAAAAAAAAA"));
        assert_ne!(a, derive_secret(&KEY, "ASIAAAAAAAAAAAAAAAAB"));
        assert_ne!(a, derive_secret(&[8; 32], "ASIAAAAAAAAAAAAAAAAA"));
    }

    #[test]
    fn tokens_round_trip_and_refuse_tampering() {
        let token = seal(&KEY, &body());
        assert!(token.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'), "url-safe");
        let (tag, blob) = verify(&KEY, &token).expect("genuine");
        assert_eq!(decode(&blob).expect("parses"), body());
        assert_eq!(verify(&KEY, &token).expect("again").0, tag, "the MAC identifies the token");

        assert_eq!(verify(&[8; 32], &token), Err(Unsealed::Invalid), "another master key");
        // Flip one bit anywhere in the raw token.
        let raw = URL_SAFE_NO_PAD.decode(&token).expect("base64");
        for i in [0, 1, raw.len() / 2, raw.len() - 1] {
            let mut bad = raw.clone();
            bad[i] ^= 1;
            assert_eq!(verify(&KEY, &URL_SAFE_NO_PAD.encode(&bad)), Err(Unsealed::Invalid), "byte {i}");
        }
        // A forged body with a recomputed MAC under a guessed key.
        let mut forged_body = body();
        forged_body.t[0].1 = "green".into();
        assert!(verify(&KEY, &seal(&[0; 32], &forged_body)).is_err());
        for junk in ["", "!!!", "AAAA", &"A".repeat(MAX_TOKEN_LEN + 1)] {
            assert!(verify(&KEY, junk).is_err(), "{junk:.10}");
        }
    }
}
