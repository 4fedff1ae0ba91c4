//! The request context: condition keys and their values.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher, RandomState};

/// Well-known condition keys the platform fills in. Any other key works too; these are only spellings.
pub mod keys {
    /// The caller's ARN. For a role session this is the *role* ARN, as in IAM. Also what a statement's
    /// `Principal`/`NotPrincipal` is matched against in [`evaluate`](crate::evaluate).
    pub const PRINCIPAL_ARN: &str = "aws:PrincipalArn";
    /// The service principal (e.g. `lambda.amazonaws.com`) when a service makes the request; matched against
    /// `Principal: {"Service": ...}` in [`evaluate`](crate::evaluate).
    pub const PRINCIPAL_SERVICE_NAME: &str = "aws:PrincipalServiceName";
    /// The caller's account id.
    pub const PRINCIPAL_ACCOUNT: &str = "aws:PrincipalAccount";
    /// The IAM user name (`${aws:username}`).
    pub const USERNAME: &str = "aws:username";
    /// The unique id of the caller (`AROA...:session` for a role session).
    pub const USER_ID: &str = "aws:userid";
    /// `"true"` when the request came over TLS.
    pub const SECURE_TRANSPORT: &str = "aws:SecureTransport";
    /// The caller's IP address.
    pub const SOURCE_IP: &str = "aws:SourceIp";
    /// The request time, ISO 8601 UTC.
    pub const CURRENT_TIME: &str = "aws:CurrentTime";
    /// The request time, epoch seconds.
    pub const EPOCH_TIME: &str = "aws:EpochTime";
    /// The keys of the tags in the request (multi-valued).
    pub const TAG_KEYS: &str = "aws:TagKeys";
    /// Prefix of a principal (session) tag key: `aws:PrincipalTag/TenantId`.
    pub const PRINCIPAL_TAG_PREFIX: &str = "aws:PrincipalTag/";
    /// Prefix of a request tag key: `aws:RequestTag/TenantId`.
    pub const REQUEST_TAG_PREFIX: &str = "aws:RequestTag/";
    /// Prefix of a resource tag key: `aws:ResourceTag/TenantId`.
    pub const RESOURCE_TAG_PREFIX: &str = "aws:ResourceTag/";
}

/// Condition keys and their values for one request.
///
/// Keys are case-insensitive (`aws:principaltag/tenantid` is `aws:PrincipalTag/TenantId`, as IAM treats
/// condition keys and session tag keys). Every key holds a list of values: single-valued keys such as
/// `aws:username` hold one, multi-valued keys such as `aws:TagKeys` or `s3:prefix` may hold several.
/// A key with no values counts as missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Context {
    /// Lower-cased key → values.
    values: HashMap<Box<str>, Vec<String>, KeyHash>,
}

impl Context {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `value` to `key` (call repeatedly for a multi-valued key).
    pub fn insert(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.values.entry(lower(key)).or_default().push(value.into());
        self
    }

    /// Replaces the values of `key`.
    pub fn set<I>(&mut self, key: &str, values: I) -> &mut Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.values.insert(lower(key), values.into_iter().map(Into::into).collect());
        self
    }

    /// Builder form of [`Context::insert`].
    #[must_use]
    pub fn with(mut self, key: &str, value: impl Into<String>) -> Self {
        self.insert(key, value);
        self
    }

    /// Builder form of [`Context::set`].
    #[must_use]
    pub fn with_values<I>(mut self, key: &str, values: I) -> Self
    where
        I: IntoIterator,
        I::Item: Into<String>,
    {
        self.set(key, values);
        self
    }

    /// Removes `key`, returning its values.
    pub fn remove(&mut self, key: &str) -> Option<Vec<String>> {
        self.values.remove(lower(key).as_ref())
    }

    /// The values of `key` (empty when missing).
    pub fn get(&self, key: &str) -> &[String] {
        if key.chars().any(char::is_uppercase) { self.get_lower(&lower(key)) } else { self.get_lower(key) }
    }

    /// Whether `key` has at least one value.
    pub fn contains_key(&self, key: &str) -> bool {
        !self.get(key).is_empty()
    }

    /// The keys (lower-cased) and their values, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[String])> {
        self.values.iter().map(|(k, v)| (k.as_ref(), v.as_slice()))
    }

    /// Lookup by an already lower-cased key: no allocation. The evaluator's hot path.
    pub(crate) fn get_lower(&self, key: &str) -> &[String] {
        self.values.get(key).map_or(&[], Vec::as_slice)
    }

    /// The value of a single-valued key: `None` when it is missing or has several values.
    pub(crate) fn single_lower(&self, key: &str) -> Option<&str> {
        match self.get_lower(key) {
            [one] => Some(one.as_str()),
            _ => None,
        }
    }
}

/// A fast keyed hash for condition keys: one multiply per 8 bytes and a final mix, seeded per context from
/// the standard library's random keys. SipHash made up a fifth of an evaluation's time. Contexts hold tens
/// of keys, so even a collision-flooded context stays cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KeyHash {
    seed: u64,
}

impl Default for KeyHash {
    fn default() -> Self {
        Self { seed: RandomState::new().hash_one(0x5eed_u64) }
    }
}

impl BuildHasher for KeyHash {
    type Hasher = KeyHasher;

    fn build_hasher(&self) -> KeyHasher {
        KeyHasher { h: self.seed }
    }
}

struct KeyHasher {
    h: u64,
}

impl KeyHasher {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;

    fn mix(&mut self, word: u64) {
        self.h = (self.h.rotate_left(23) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.mix(u64::from_le_bytes(word) ^ ((rest.len() as u64) << 59));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn finish(&self) -> u64 {
        // murmur3's fmix64: spreads every input bit over the high bits the table uses.
        let mut h = self.h;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// How keys are normalised, here and when a policy is compiled.
pub(crate) fn lower(key: &str) -> Box<str> {
    key.to_lowercase().into_boxed_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_case_insensitive_and_multi_valued() {
        let mut ctx = Context::new();
        ctx.insert("aws:PrincipalTag/TenantId", "blue").insert("s3:prefix", "a/").insert("S3:Prefix", "b/");
        assert_eq!(ctx.get("AWS:principaltag/tenantid"), ["blue"]);
        assert_eq!(ctx.get("s3:prefix"), ["a/", "b/"]);
        assert_eq!(ctx.single_lower("s3:prefix"), None, "multi-valued is not single");
        assert_eq!(ctx.single_lower("aws:principaltag/tenantid"), Some("blue"));
        assert!(ctx.get("aws:username").is_empty());
        ctx.set("s3:prefix", ["c/"]);
        assert_eq!(ctx.get("s3:prefix"), ["c/"]);
        assert_eq!(ctx.remove("S3:PREFIX"), Some(vec!["c/".to_owned()]));
        assert!(!ctx.contains_key("s3:prefix"));
    }

    #[test]
    fn key_hash_separates_similar_keys() {
        let build = KeyHash { seed: 1 };
        let keys = ["aws:principaltag/a", "aws:principaltag/b", "aws:principaltag/ab", "aws:principaltag/", ""];
        let hashes: Vec<u64> = keys.iter().map(|k| build.hash_one(k)).collect();
        for (i, a) in hashes.iter().enumerate() {
            assert!(hashes[i + 1..].iter().all(|b| a != b), "collision among {keys:?}");
        }
        assert_ne!(KeyHash { seed: 2 }.hash_one("k"), build.hash_one("k"), "seeded");
    }

    #[test]
    fn empty_value_list_counts_as_missing() {
        let ctx = Context::new().with_values("aws:TagKeys", Vec::<String>::new());
        assert!(!ctx.contains_key("aws:TagKeys"));
    }
}
