//! The awsQuery request side: form decoding, parameter access and `X.member.N` lists.

use std::collections::BTreeMap;
use std::ops::Bound;

use crate::error::IdentityError;

/// Decodes an `application/x-www-form-urlencoded` body (`+` is a space, `%XX` a byte; the result must be
/// UTF-8).
pub fn parse_form(body: &[u8]) -> Result<Vec<(String, String)>, IdentityError> {
    let mut out = Vec::new();
    for pair in body.split(|&b| b == b'&') {
        if pair.is_empty() {
            continue;
        }
        let (name, value) = match pair.iter().position(|&b| b == b'=') {
            Some(i) => (&pair[..i], &pair[i + 1..]),
            None => (pair, &[][..]),
        };
        out.push((form_decode(name)?, form_decode(value)?));
    }
    Ok(out)
}

fn form_decode(s: &[u8]) -> Result<String, IdentityError> {
    let malformed = || IdentityError::MalformedQueryString("invalid percent-encoding in the request body".into());
    let mut bytes = Vec::with_capacity(s.len());
    let mut i = 0;
    while let Some(&b) = s.get(i) {
        match b {
            b'+' => bytes.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3).ok_or_else(malformed)?;
                let hi = hex_val(hex[0]).ok_or_else(malformed)?;
                let lo = hex_val(hex[1]).ok_or_else(malformed)?;
                bytes.push(hi << 4 | lo);
                i += 2;
            }
            b => bytes.push(b),
        }
        i += 1;
    }
    String::from_utf8(bytes).map_err(|_| IdentityError::MalformedQueryString("the request body is not UTF-8".into()))
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes every byte but RFC 3986's unreserved characters, as IAM returns policy documents.
pub(crate) fn url_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
    }
    out
}

/// The parameters of one request. Names are case-sensitive, as in AWS; a name given twice is refused.
#[derive(Debug)]
pub(crate) struct Params<'a> {
    map: BTreeMap<&'a str, &'a str>,
}

impl<'a> Params<'a> {
    pub(crate) fn new(form: &'a [(String, String)]) -> Result<Self, IdentityError> {
        let mut map = BTreeMap::new();
        for (k, v) in form {
            if map.insert(k.as_str(), v.as_str()).is_some() {
                return Err(IdentityError::MalformedQueryString(format!("Parameter {k} was given more than once")));
            }
        }
        Ok(Self { map })
    }

    pub(crate) fn get(&self, name: &str) -> Option<&'a str> {
        self.map.get(name).copied()
    }

    /// Whether the parameter `name`, or a member of the list or structure `name.`, was given (an empty `name=`,
    /// how an empty list is sent, does not count).
    pub(crate) fn has(&self, name: &str) -> bool {
        self.get(name).is_some_and(|v| !v.is_empty())
            || self.map.keys().any(|k| k.strip_prefix(name).is_some_and(|rest| rest.starts_with('.')))
    }

    /// The items of the list `prefix.member.N[.suffix]`, numbered from 1 without gaps. Each item is the map of
    /// its suffixes (`""` for a scalar member) to values. An empty `prefix=` is an empty list.
    pub(crate) fn list(&self, prefix: &str) -> Result<Vec<BTreeMap<&'a str, &'a str>>, IdentityError> {
        let start = format!("{prefix}.member.");
        let mut items: BTreeMap<usize, BTreeMap<&'a str, &'a str>> = BTreeMap::new();
        for (&k, &v) in self.map.range::<str, _>((Bound::Included(start.as_str()), Bound::Unbounded)) {
            let Some(rest) = k.strip_prefix(start.as_str()) else { break };
            let (index, suffix) = match rest.split_once('.') {
                Some((i, s)) => (i, s),
                None => (rest, ""),
            };
            let index =
                index.parse::<usize>().ok().filter(|&i| i >= 1 && !index.starts_with('0')).ok_or_else(|| {
                    IdentityError::MalformedQueryString(format!("Invalid list index in parameter {k}"))
                })?;
            items.entry(index).or_default().insert(suffix, v);
        }
        if let Some((&last, _)) = items.last_key_value()
            && last != items.len()
        {
            return Err(IdentityError::MalformedQueryString(format!(
                "The members of {prefix} must be numbered 1, 2, 3, ... without gaps"
            )));
        }
        Ok(items.into_values().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn decodes_forms() {
        let f = parse_form(b"Action=AssumeRole&RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fx&A=b+c&Empty=&Flag")
            .expect("valid form");
        assert_eq!(
            f,
            form(&[
                ("Action", "AssumeRole"),
                ("RoleArn", "arn:aws:iam::1:role/x"),
                ("A", "b c"),
                ("Empty", ""),
                ("Flag", "")
            ])
        );
        assert!(parse_form(b"A=%4").is_err());
        assert!(parse_form(b"A=%zz").is_err());
        assert!(parse_form(b"A=%ff").is_err(), "not UTF-8");
        assert_eq!(parse_form(b"A=%C3%A9").expect("utf-8"), form(&[("A", "é")]));
    }

    #[test]
    fn encodes_like_iam() {
        assert_eq!(url_encode(r#"{"a": "b/c*"}é~"#), "%7B%22a%22%3A%20%22b%2Fc%2A%22%7D%C3%A9~");
    }

    #[test]
    fn lists_must_be_contiguous() {
        let f = form(&[
            ("Tags.member.2.Key", "b"),
            ("Tags.member.1.Key", "a"),
            ("Tags.member.1.Value", "1"),
            ("Tags.member.2.Value", "2"),
            ("TagsX", "ignored"),
            ("TransitiveTagKeys.member.1", "a"),
        ]);
        let p = Params::new(&f).expect("no duplicates");
        let tags = p.list("Tags").expect("contiguous");
        assert_eq!(tags.len(), 2);
        assert_eq!(tags[0].get("Key"), Some(&"a"));
        assert_eq!(tags[1].get("Value"), Some(&"2"));
        assert_eq!(p.list("TransitiveTagKeys").expect("list")[0].get(""), Some(&"a"));
        assert!(p.list("Nothing").expect("empty").is_empty());
        assert!(p.has("Tags") && !p.has("Tag"));
        let empty = form(&[("PolicyArns", ""), ("Policy", "x")]);
        let p = Params::new(&empty).expect("no duplicates");
        assert!(!p.has("PolicyArns") && p.has("Policy"), "an empty list is no list");

        let gap = form(&[("Tags.member.1.Key", "a"), ("Tags.member.3.Key", "c")]);
        assert!(Params::new(&gap).expect("ok").list("Tags").is_err());
        let zero = form(&[("Tags.member.0.Key", "a")]);
        assert!(Params::new(&zero).expect("ok").list("Tags").is_err());
        let dup = form(&[("A", "1"), ("A", "2")]);
        assert!(Params::new(&dup).is_err());
    }
}
