//! Parameter rules from the IAM and STS models (lengths and patterns), and tag lists.

use std::collections::BTreeMap;

use crate::error::{Checks, IdentityError};

/// `[\w+=,.@-]`: role names, policy names, session names, source identities. `\w` is ASCII, as in Java.
pub(crate) fn name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}
pub(crate) const NAME_PATTERN: &str = r"[\w+=,.@-]+";
pub(crate) const SESSION_NAME_PATTERN: &str = r"[\w+=,.@-]*";

/// `[\w+=,.@:\/-]`: external ids.
pub(crate) fn external_id_char(c: char) -> bool {
    name_char(c) || c == ':' || c == '/'
}
pub(crate) const EXTERNAL_ID_PATTERN: &str = r"[\w+=,.@:\/-]*";

/// `[\u0009\u000A\u000D\u0020-\u00FF]`: policy documents.
pub(crate) fn policy_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{FF}')
}
pub(crate) const POLICY_PATTERN: &str = r"[\u0009\u000A\u000D\u0020-\u00FF]+";

/// `[\u0009\u000A\u000D\u0020-\u007E\u00A1-\u00FF]`: role descriptions.
pub(crate) fn description_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{7E}' | '\u{A1}'..='\u{FF}')
}
pub(crate) const DESCRIPTION_PATTERN: &str = r"[\u0009\u000A\u000D\u0020-\u007E\u00A1-\u00FF]*";

/// `[\p{L}\p{Z}\p{N}_.:/=+\-@]`: tag keys and values.
pub(crate) fn tag_char(c: char) -> bool {
    c.is_alphabetic() || c.is_numeric() || is_space_separator(c) || "_.:/=+-@".contains(c)
}
const TAG_KEY_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]+";
const TAG_VALUE_PATTERN: &str = r"[\p{L}\p{Z}\p{N}_.:/=+\-@]*";

/// Unicode category Z (space, line and paragraph separators).
fn is_space_separator(c: char) -> bool {
    matches!(
        c,
        ' ' | '\u{A0}' | '\u{1680}' | '\u{2000}'
            ..='\u{200A}' | '\u{2028}' | '\u{2029}' | '\u{202F}' | '\u{205F}' | '\u{3000}'
    )
}

/// A role path: `/` or `/x/.../` of printable ASCII.
pub(crate) fn check_path(checks: &mut Checks, member: &str, path: Option<&str>) {
    checks.length(member, path, 1, 512);
    if let Some(p) = path {
        let ok = p == "/"
            || (p.len() >= 3 && p.starts_with('/') && p.ends_with('/') && p.chars().all(|c| matches!(c, '!'..='~')));
        if !ok {
            checks.fail(
                member,
                path,
                r"Member must satisfy regular expression pattern: (\u002F)|(\u002F[\u0021-\u007E]+\u002F)",
            );
        }
    }
}

/// Checks a required name parameter (`[\w+=,.@-]+`, `1..=max`).
pub(crate) fn check_name<'v>(checks: &mut Checks, member: &str, value: Option<&'v str>, max: usize) -> Option<&'v str> {
    let v = checks.required(member, value);
    checks.length(member, v, 1, max);
    checks.chars(member, v, NAME_PATTERN, name_char);
    v
}

/// The most tags a role or session may have.
pub(crate) const MAX_TAGS: usize = 50;

/// Reads `Tags.member.N.Key/Value` into pairs; a missing key or value is a failure in `checks`.
pub(crate) fn tag_pairs(checks: &mut Checks, items: &[BTreeMap<&str, &str>]) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let n = i + 1;
        let key = checks.required(&format!("tags.{n}.member.key"), item.get("Key").copied());
        let value = checks.required(&format!("tags.{n}.member.value"), item.get("Value").copied());
        if let (Some(k), Some(v)) = (key, value) {
            out.push((k.to_owned(), v.to_owned()));
        }
    }
    out
}

/// Checks tags: at most 50, key and value lengths and characters (into `checks`); then no `aws:` prefix and
/// no key twice (keys are case-insensitive), returned as an error.
pub(crate) fn check_tags(checks: &mut Checks, tags: &[(String, String)]) -> Result<(), IdentityError> {
    if tags.len() > MAX_TAGS {
        checks.fail(
            "tags",
            Some(&format!("[{} tags]", tags.len())),
            "Member must have length less than or equal to 50",
        );
    }
    for (i, (k, v)) in tags.iter().enumerate() {
        let n = i + 1;
        let key_member = format!("tags.{n}.member.key");
        let value_member = format!("tags.{n}.member.value");
        checks.length(&key_member, Some(k), 1, 128);
        checks.chars(&key_member, Some(k), TAG_KEY_PATTERN, tag_char);
        checks.length(&value_member, Some(v), 0, 256);
        checks.chars(&value_member, Some(v), TAG_VALUE_PATTERN, tag_char);
    }
    for (i, (k, _)) in tags.iter().enumerate() {
        if k.get(..4).is_some_and(|p| p.eq_ignore_ascii_case("aws:")) {
            return Err(IdentityError::Validation(format!(
                "The tag key {k:?} uses the reserved prefix \"aws:\"; tag keys must not start with it"
            )));
        }
        if tags[..i].iter().any(|(other, _)| same_key(other, k)) {
            return Err(IdentityError::Validation(
                "Duplicate tag keys found. Please note that Tag keys are case insensitive.".into(),
            ));
        }
    }
    Ok(())
}

/// Checks a list of tag keys (`TransitiveTagKeys`): at most 50, each a valid tag key.
pub(crate) fn check_tag_keys(checks: &mut Checks, member: &str, keys: &[String]) {
    if keys.len() > MAX_TAGS {
        checks.fail(
            member,
            Some(&format!("[{} keys]", keys.len())),
            "Member must have length less than or equal to 50",
        );
    }
    for k in keys {
        checks.length(member, Some(k), 1, 128);
        checks.chars(member, Some(k), TAG_KEY_PATTERN, tag_char);
    }
}

/// Tag keys compare case-insensitively.
pub(crate) fn same_key(a: &str, b: &str) -> bool {
    a == b || a.to_lowercase() == b.to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag_items<'a>(pairs: &[(&'a str, &'a str)]) -> Vec<BTreeMap<&'a str, &'a str>> {
        pairs.iter().map(|(k, v)| BTreeMap::from([("Key", *k), ("Value", *v)])).collect()
    }

    #[test]
    fn tag_rules() {
        let mut c = Checks::new();
        let ok = tag_pairs(&mut c, &tag_items(&[("TenantId", "blue"), ("Ünïcode Key", "ö @:/=+-_.")]));
        check_tags(&mut c, &ok).expect("valid");
        assert!(c.finish().is_ok());
        assert_eq!(ok.len(), 2);

        let mut c = Checks::new();
        let bad = tag_pairs(&mut c, &tag_items(&[("bad*key", "v"), ("k", &"v".repeat(257)), ("", "v")]));
        let _ = check_tags(&mut c, &bad);
        let msg = c.finish().expect_err("three failures").to_string();
        assert!(msg.starts_with("3 validation errors detected"), "{msg}");
        assert!(msg.contains("tags.1.member.key"), "{msg}");

        let mut c = Checks::new();
        let missing = vec![BTreeMap::from([("Key", "k")])];
        assert!(tag_pairs(&mut c, &missing).is_empty());
        assert!(c.finish().expect_err("no value").to_string().contains("Value null at 'tags.1.member.value'"));

        let pairs = |p: &[(&str, &str)]| p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect::<Vec<_>>();
        let mut c = Checks::new();
        assert!(check_tags(&mut c, &pairs(&[("Team", "a"), ("team", "b")])).is_err(), "case-insensitive duplicate");
        assert!(check_tags(&mut c, &pairs(&[("AWS:x", "a")])).is_err(), "reserved prefix");
        let many: Vec<(String, String)> = (0..51).map(|i| (format!("k{i}"), "v".to_owned())).collect();
        check_tags(&mut c, &many).expect("only the count is wrong");
        assert!(c.finish().is_err(), "51 tags");
    }

    #[test]
    fn paths_and_names() {
        for (path, ok) in [("/", true), ("/a/b/", true), ("a/", false), ("/a", false), ("//", false), ("/a b/", false)]
        {
            let mut c = Checks::new();
            check_path(&mut c, "path", Some(path));
            assert_eq!(c.finish().is_ok(), ok, "{path}");
        }
        let mut c = Checks::new();
        assert_eq!(check_name(&mut c, "roleName", Some("role_+=,.@-1"), 64), Some("role_+=,.@-1"));
        assert!(c.finish().is_ok());
        let mut c = Checks::new();
        check_name(&mut c, "roleName", Some("no/slash"), 64);
        assert!(c.finish().is_err());
    }
}
