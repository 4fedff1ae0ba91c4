//! Bucket-name rules and the encodings of untrusted names.

/// Whether `name` is a valid general-purpose bucket name, as S3 decides: 3–63 characters of
/// lowercase letters, digits, `.` and `-`; starting and ending with a letter or digit; no `..`;
/// not an IP address; none of the reserved prefixes (`xn--`, `sthree-`, `amzn-s3-demo-`) or
/// suffixes (`-s3alias`, `--ol-s3`, `.mrap`, `--x-s3`, `--table-s3`).
#[must_use]
pub fn valid_bucket_name(name: &str) -> bool {
    const PREFIXES: [&str; 3] = ["xn--", "sthree-", "amzn-s3-demo-"];
    const SUFFIXES: [&str; 5] = ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"];
    s3s::path::check_bucket_name(name)
        && !PREFIXES.iter().any(|p| name.starts_with(p))
        && !SUFFIXES.iter().any(|s| name.ends_with(s))
}

/// The smallest byte string greater than every string that starts with `prefix`, or `None` if
/// there is none (empty prefix, or all `0xFF`).
pub(crate) fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut v = prefix.to_vec();
    while let Some(last) = v.pop() {
        if last < 0xFF {
            v.push(last + 1);
            return Some(v);
        }
    }
    None
}

/// The smallest byte string greater than `key`.
pub(crate) fn key_successor(key: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(key.len() + 1);
    v.extend_from_slice(key);
    v.push(0);
    v
}

/// Characters left as they are by `EncodingType=url` in listings (RFC 3986 unreserved, and
/// `/`), as S3 does.
const URL_ENCODE: &percent_encoding::AsciiSet =
    &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~').remove(b'/');

pub(crate) fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, URL_ENCODE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names() {
        for ok in ["abc", "my-bucket", "my.bucket.1", "0abc", &"a".repeat(63)] {
            assert!(valid_bucket_name(ok), "{ok}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "Abc",
            "a_b",
            "-abc",
            "abc-",
            "a..b",
            "192.168.1.1",
            "xn--abc",
            "sthree-x",
            "x-s3alias",
            "x--ol-s3",
            "x.mrap",
            "../etc",
            "a/b",
            "ab\0",
            "bück",
        ] {
            assert!(!valid_bucket_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn successors() {
        assert_eq!(prefix_successor(b""), None);
        assert_eq!(prefix_successor(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_successor(b"a\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_successor(b"\xff\xff"), None);
        assert_eq!(key_successor(b"a"), b"a\0".to_vec());
    }

    #[test]
    fn url_encoding() {
        assert_eq!(url_encode("a b/c+d~é"), "a%20b/c%2Bd~%C3%A9");
    }
}
