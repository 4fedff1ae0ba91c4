//! The canonical request, shared by the verifier and the signer.
//!
//! Everything here streams: components are canonicalised byte by byte through [`Canon`] and
//! written into a [`Sink`], which is either a `Vec<u8>` (debugging, tests) or a [`HashSink`]
//! that feeds SHA-256 through a stack buffer, so verifying allocates nothing for the
//! canonical request itself.

use std::borrow::Cow;
use std::cmp::Ordering;

use http::HeaderMap;
use sha2::{Digest, Sha256};

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// RFC 3986 unreserved characters: the only bytes SigV4 leaves unencoded (besides `/` in paths).
#[inline]
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

#[inline]
fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// How the request path becomes the canonical URI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UriEncoding {
    /// Every service but S3: the path *as received* (already percent-encoded) is URI-encoded
    /// again, so `%3A` becomes `%253A`. This is what every AWS SDK does for non-S3 services.
    Double,
    /// S3: each path segment is URI-encoded once. The path as received is percent-decoded
    /// and re-encoded per RFC 3986 (so `%3a` → `%3A`, a raw `:` → `%3A`, `%2F` stays `%2F`,
    /// `/` separates segments).
    Single,
}

/// How one component is canonicalised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Query keys and values: decode `%XX`, then encode every byte outside the unreserved set.
    /// A literal `+` is a plus sign (`%2B`), not a space.
    Component,
    /// S3 path: as `Component`, but a literal `/` is kept as the segment separator.
    PathOnce,
    /// Non-S3 path: no decoding; every byte but unreserved ones and `/` is encoded (`%`→`%25`).
    PathTwice,
}

/// Iterator over the canonical encoding of one raw component.
pub(crate) struct Canon<'a> {
    src: &'a [u8],
    pos: usize,
    pending: [u8; 2],
    npending: u8,
    mode: Mode,
}

impl<'a> Canon<'a> {
    pub(crate) fn new(src: &'a [u8], mode: Mode) -> Self {
        Canon { src, pos: 0, pending: [0; 2], npending: 0, mode }
    }
}

impl Iterator for Canon<'_> {
    type Item = u8;

    #[inline]
    fn next(&mut self) -> Option<u8> {
        if self.npending > 0 {
            let b = self.pending[2 - usize::from(self.npending)];
            self.npending -= 1;
            return Some(b);
        }
        let &b = self.src.get(self.pos)?;
        self.pos += 1;
        let byte = if b == b'%' && self.mode != Mode::PathTwice {
            let hi = self.src.get(self.pos).copied().and_then(hex_val);
            let lo = self.src.get(self.pos + 1).copied().and_then(hex_val);
            match (hi, lo) {
                (Some(hi), Some(lo)) => {
                    self.pos += 2;
                    hi << 4 | lo
                }
                // A stray `%` is a literal percent sign.
                _ => b'%',
            }
        } else if b == b'/' && self.mode != Mode::Component {
            return Some(b'/');
        } else {
            b
        };
        if is_unreserved(byte) {
            return Some(byte);
        }
        self.pending = [HEX_UPPER[usize::from(byte >> 4)], HEX_UPPER[usize::from(byte & 0xF)]];
        self.npending = 2;
        Some(b'%')
    }
}

/// Writes the canonical encoding of `src` (the same bytes [`Canon`] yields), copying runs of
/// bytes that pass through unchanged in one go.
pub(crate) fn write_canon<W: Sink>(w: &mut W, src: &[u8], mode: Mode) {
    let keep_slash = mode != Mode::Component;
    let mut i = 0;
    while i < src.len() {
        let start = i;
        while i < src.len() && (is_unreserved(src[i]) || (keep_slash && src[i] == b'/')) {
            i += 1;
        }
        if i > start {
            w.put(&src[start..i]);
        }
        if i == src.len() {
            break;
        }
        // One special byte (or a %XX triplet): let the iterator handle it.
        let end = if src[i] == b'%' && mode != Mode::PathTwice {
            let valid = src.get(i + 1).copied().and_then(hex_val).is_some()
                && src.get(i + 2).copied().and_then(hex_val).is_some();
            if valid { i + 3 } else { i + 1 }
        } else {
            i + 1
        };
        w.put_iter(Canon::new(&src[i..end], mode));
        i = end;
    }
}

/// True when the raw (percent-encoded) query key decodes to exactly `name`.
pub(crate) fn decoded_eq(raw: &[u8], name: &str) -> bool {
    let mut it = Decode { src: raw, pos: 0 };
    name.bytes().all(|b| it.next() == Some(b)) && it.next().is_none()
}

/// Percent-decodes a raw component (`+` stays `+`), lossily as UTF-8.
pub(crate) fn decode_bytes(raw: &[u8]) -> String {
    let bytes: Vec<u8> = Decode { src: raw, pos: 0 }.collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// URI-encodes a plain (not yet encoded) value: every byte but unreserved ones.
pub(crate) fn encode_component(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 16);
    for &b in value.as_bytes() {
        if is_unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX_UPPER[usize::from(b >> 4)]));
            out.push(char::from(HEX_UPPER[usize::from(b & 0xF)]));
        }
    }
    out
}

struct Decode<'a> {
    src: &'a [u8],
    pos: usize,
}

impl Iterator for Decode<'_> {
    type Item = u8;
    fn next(&mut self) -> Option<u8> {
        let &b = self.src.get(self.pos)?;
        self.pos += 1;
        if b == b'%' {
            let hi = self.src.get(self.pos).copied().and_then(hex_val);
            let lo = self.src.get(self.pos + 1).copied().and_then(hex_val);
            if let (Some(hi), Some(lo)) = (hi, lo) {
                self.pos += 2;
                return Some(hi << 4 | lo);
            }
        }
        Some(b)
    }
}

/// Where the canonical request is written.
pub(crate) trait Sink {
    fn put(&mut self, bytes: &[u8]);
    fn put_byte(&mut self, b: u8);
    fn put_iter(&mut self, it: impl Iterator<Item = u8>) {
        for b in it {
            self.put_byte(b);
        }
    }
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
    fn put_byte(&mut self, b: u8) {
        self.push(b);
    }
}

const HASH_BUF: usize = 256;

/// A SHA-256 fed through a stack buffer, so byte-at-a-time writes stay cheap.
pub(crate) struct HashSink {
    hasher: Sha256,
    buf: [u8; HASH_BUF],
    len: usize,
}

impl HashSink {
    pub(crate) fn new() -> Self {
        HashSink { hasher: Sha256::new(), buf: [0; HASH_BUF], len: 0 }
    }

    fn flush(&mut self) {
        self.hasher.update(&self.buf[..self.len]);
        self.len = 0;
    }

    pub(crate) fn finish(mut self) -> [u8; 32] {
        self.flush();
        self.hasher.finalize().into()
    }
}

impl Sink for HashSink {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        if bytes.len() > HASH_BUF - self.len {
            self.flush();
            if bytes.len() >= HASH_BUF {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    #[inline]
    fn put_byte(&mut self, b: u8) {
        if self.len == HASH_BUF {
            self.flush();
        }
        self.buf[self.len] = b;
        self.len += 1;
    }
}

/// Removes `.`/`..` segments (RFC 3986 §5.2.4) and empty segments (`//`), as AWS SDKs do for
/// every service but S3. Works on the raw path, so `%2E` is not a dot.
pub(crate) fn normalize_path(path: &str) -> Cow<'_, str> {
    if path.is_empty() {
        return Cow::Borrowed("/");
    }
    if path.starts_with('/') && !path.contains("//") && !path.contains("/.") {
        return Cow::Borrowed(path);
    }
    let mut out: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            s => out.push(s),
        }
    }
    let mut result = String::with_capacity(path.len() + 1);
    for seg in &out {
        result.push('/');
        result.push_str(seg);
    }
    // "/a/b/", "/a/b/." and "/a/b/.." all end in a directory.
    let trailing = ["/", "/.", "/.."].iter().any(|s| path.ends_with(s));
    if result.is_empty() || trailing {
        result.push('/');
    }
    Cow::Owned(result)
}

/// Everything that makes up a canonical request.
pub(crate) struct CanonicalInput<'a, S> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub headers: &'a HeaderMap,
    pub signed_headers: &'a [S],
    pub payload_hash: &'a str,
    pub encoding: UriEncoding,
    pub normalize_path: bool,
    /// Leave `X-Amz-Signature` out of the canonical query string (presigned requests).
    pub exclude_signature: bool,
    /// Treat tabs in header values as spaces (see [`write_trimmed`]).
    pub fold_tabs: bool,
}

/// Whether any signed header value holds a tab, so that SDKs disagree on its canonical form.
pub(crate) fn signed_values_have_tabs<S: AsRef<str>>(headers: &HeaderMap, signed: &[S]) -> bool {
    signed.iter().any(|name| headers.get_all(name.as_ref()).iter().any(|v| v.as_bytes().contains(&b'\t')))
}

/// Up to this many query parameters are sorted on the stack.
const STACK_PARAMS: usize = 16;

type Pair<'a> = (&'a [u8], &'a [u8]);

fn cmp_pairs(a: &Pair<'_>, b: &Pair<'_>) -> Ordering {
    Canon::new(a.0, Mode::Component)
        .cmp(Canon::new(b.0, Mode::Component))
        .then_with(|| Canon::new(a.1, Mode::Component).cmp(Canon::new(b.1, Mode::Component)))
}

pub(crate) fn query_pairs<'a>(query: &'a str, exclude_signature: bool) -> impl Iterator<Item = Pair<'a>> {
    query.as_bytes().split(|&b| b == b'&').filter(|p| !p.is_empty()).filter_map(move |p| {
        let (k, v) = match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        };
        if exclude_signature && decoded_eq(k, "X-Amz-Signature") { None } else { Some((k, v)) }
    })
}

fn write_query<W: Sink>(w: &mut W, query: &str, exclude_signature: bool) {
    if query.is_empty() {
        return;
    }
    let mut stack: [Pair<'_>; STACK_PARAMS] = [(&[], &[]); STACK_PARAMS];
    let mut heap: Vec<Pair<'_>>;
    let mut n = 0;
    let mut spilled = false;
    for pair in query_pairs(query, exclude_signature) {
        if n < STACK_PARAMS {
            stack[n] = pair;
            n += 1;
        } else {
            spilled = true;
            break;
        }
    }
    let pairs: &mut [Pair<'_>] = if spilled {
        heap = query_pairs(query, exclude_signature).collect();
        &mut heap
    } else {
        &mut stack[..n]
    };
    pairs.sort_unstable_by(cmp_pairs);
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            w.put_byte(b'&');
        }
        write_canon(w, k, Mode::Component);
        w.put_byte(b'=');
        write_canon(w, v, Mode::Component);
    }
}

/// Writes a header value trimmed, with runs of spaces collapsed to one space. With
/// `fold_tabs`, every ASCII whitespace byte (in practice a tab: the only one a `HeaderValue`
/// can hold) counts as a space, as botocore and the JS SDK do; without it only spaces do, as
/// aws-sigv4 (Rust) and the Go SDK do.
fn write_trimmed<W: Sink>(w: &mut W, value: &[u8], fold_tabs: bool) {
    let is_space = |b: u8| b == b' ' || (fold_tabs && matches!(b, b'\t' | b'\r' | b'\n' | 0x0b | 0x0c));
    let mut i = 0;
    let mut first = true;
    loop {
        while i < value.len() && is_space(value[i]) {
            i += 1;
        }
        if i == value.len() {
            return;
        }
        let start = i;
        while i < value.len() && !is_space(value[i]) {
            i += 1;
        }
        if !first {
            w.put_byte(b' ');
        }
        first = false;
        w.put(&value[start..i]);
    }
}

/// Writes the canonical request into `w`.
pub(crate) fn write_canonical_request<W: Sink, S: AsRef<str>>(w: &mut W, c: &CanonicalInput<'_, S>) {
    w.put(c.method.as_bytes());
    w.put_byte(b'\n');

    let path = if c.normalize_path {
        normalize_path(c.path)
    } else if c.path.is_empty() {
        Cow::Borrowed("/")
    } else {
        Cow::Borrowed(c.path)
    };
    let mode = match c.encoding {
        UriEncoding::Double => Mode::PathTwice,
        UriEncoding::Single => Mode::PathOnce,
    };
    write_canon(w, path.as_bytes(), mode);
    w.put_byte(b'\n');

    write_query(w, c.query, c.exclude_signature);
    w.put_byte(b'\n');

    for name in c.signed_headers {
        let name = name.as_ref();
        w.put(name.as_bytes());
        w.put_byte(b':');
        for (i, value) in c.headers.get_all(name).iter().enumerate() {
            if i > 0 {
                w.put_byte(b',');
            }
            write_trimmed(w, value.as_bytes(), c.fold_tabs);
        }
        w.put_byte(b'\n');
    }
    w.put_byte(b'\n');

    for (i, name) in c.signed_headers.iter().enumerate() {
        if i > 0 {
            w.put_byte(b';');
        }
        w.put(name.as_ref().as_bytes());
    }
    w.put_byte(b'\n');
    w.put(c.payload_hash.as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str, mode: Mode) -> String {
        String::from_utf8(Canon::new(s.as_bytes(), mode).collect()).expect("canonical output is ASCII")
    }

    fn query(q: &str, exclude: bool) -> String {
        let mut v = Vec::new();
        write_query(&mut v, q, exclude);
        String::from_utf8(v).expect("canonical output is ASCII")
    }

    #[test]
    fn component_encoding() {
        assert_eq!(canon("a b", Mode::Component), "a%20b");
        assert_eq!(canon("a%20b", Mode::Component), "a%20b");
        assert_eq!(canon("a+b", Mode::Component), "a%2Bb");
        assert_eq!(canon("a%2bb", Mode::Component), "a%2Bb");
        assert_eq!(canon("%7E%41-_.~", Mode::Component), "~A-_.~");
        assert_eq!(canon("a/b", Mode::Component), "a%2Fb");
        assert_eq!(canon("100%", Mode::Component), "100%25");
        assert_eq!(canon("%zz", Mode::Component), "%25zz");
        assert_eq!(canon("ሴ", Mode::Component), "%E1%88%B4");
        assert_eq!(canon("%e1%88%b4", Mode::Component), "%E1%88%B4");
    }

    #[test]
    fn write_canon_matches_iterator() {
        let inputs = [
            "",
            "/",
            "a",
            "%",
            "%4",
            "%41",
            "%zz/x",
            "/a b/%2F%2f%3A:+&=ሴ%E1%88%B4",
            "%%%41%",
            "abc-._~/XYZ%7e",
            "/%/",
        ];
        for input in inputs {
            for mode in [Mode::Component, Mode::PathOnce, Mode::PathTwice] {
                let mut fast = Vec::new();
                write_canon(&mut fast, input.as_bytes(), mode);
                let slow: Vec<u8> = Canon::new(input.as_bytes(), mode).collect();
                assert_eq!(fast, slow, "{input:?} {mode:?}");
            }
        }
    }

    #[test]
    fn path_encoding() {
        assert_eq!(canon("/a b/c", Mode::PathOnce), "/a%20b/c");
        assert_eq!(canon("/a%2Fb/c%3a", Mode::PathOnce), "/a%2Fb/c%3A");
        assert_eq!(canon("/arn:aws", Mode::PathOnce), "/arn%3Aaws");
        assert_eq!(canon("/arn%3Aaws", Mode::PathTwice), "/arn%253Aaws");
        assert_eq!(canon("/arn:aws", Mode::PathTwice), "/arn%3Aaws");
        assert_eq!(canon("/a%2Fb", Mode::PathTwice), "/a%252Fb");
        assert_eq!(canon("/-._~", Mode::PathTwice), "/-._~");
    }

    #[test]
    fn query_sorting() {
        assert_eq!(query("b=2&a=1&a=0", false), "a=0&a=1&b=2");
        assert_eq!(query("a&b=&c", false), "a=&b=&c=");
        assert_eq!(query("&&a=1&", false), "a=1");
        // Sorted by key, then value; not by the joined "key=value" string.
        assert_eq!(query("a-b=1&a=2", false), "a=2&a-b=1");
        // Sorted on the *encoded* form: "%2B" (0x25) sorts before "A" (0x41).
        assert_eq!(query("A=1&+=2", false), "%2B=2&A=1");
        assert_eq!(query("X-Amz-Signature=abc&b=1", true), "b=1");
        assert_eq!(query("X-Amz-Signature=abc&b=1", false), "X-Amz-Signature=abc&b=1");
        let many: Vec<String> = (0..40).rev().map(|i| format!("k{i:02}=v")).collect();
        let expected: Vec<String> = (0..40).map(|i| format!("k{i:02}=v")).collect();
        assert_eq!(query(&many.join("&"), false), expected.join("&"));
    }

    #[test]
    fn normalization() {
        for (input, expected) in [
            ("", "/"),
            ("/", "/"),
            ("//", "/"),
            ("/./", "/"),
            ("/example/..", "/"),
            ("/example1/example2/../..", "/"),
            ("/./example", "/example"),
            ("//example//", "/example/"),
            ("/a/b/.", "/a/b/"),
            ("/a/./b/../c", "/a/c"),
            ("/.well-known/x", "/.well-known/x"),
            ("/a/%2E%2E/b", "/a/%2E%2E/b"),
        ] {
            assert_eq!(normalize_path(input), expected, "{input}");
        }
    }

    #[test]
    fn trimming() {
        let mut v = Vec::new();
        write_trimmed(&mut v, b"  a   b\t\tc  ", true);
        assert_eq!(v, b"a b c");
        let mut v = Vec::new();
        write_trimmed(&mut v, b"  a   b\t\tc \t ", false);
        assert_eq!(v, b"a b\t\tc \t");
    }

    #[test]
    fn hash_sink_matches_plain_sha256() {
        let data: Vec<u8> = (0..2000u32).map(|i| (i % 251) as u8).collect();
        let mut sink = HashSink::new();
        // A mix of tiny, medium and large writes crossing the buffer boundary.
        let mut rest = &data[..];
        let mut step = 1;
        while !rest.is_empty() {
            let n = step.min(rest.len());
            if n == 1 {
                sink.put_byte(rest[0]);
            } else {
                sink.put(&rest[..n]);
            }
            rest = &rest[n..];
            step = step * 3 % 301 + 1;
        }
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(sink.finish(), expected);
    }
}
