//! A small XML writer for awsQuery responses: elements, text, and nothing else.
//!
//! Text is escaped for element content. Characters XML 1.0 cannot carry at all (most C0 controls, lone
//! surrogates cannot occur in a `str`, U+FFFE/U+FFFF) become U+FFFD, so a hostile value in an error message
//! can never make a response unparseable.

use std::fmt::Write as _;

/// An XML document under construction.
#[derive(Debug, Default)]
pub(crate) struct Xml {
    buf: String,
}

impl Xml {
    pub(crate) fn new() -> Self {
        Self { buf: String::with_capacity(1024) }
    }

    /// `<name xmlns="ns">` ... `</name>`, the body written by `f`.
    pub(crate) fn root(&mut self, name: &str, ns: &str, f: impl FnOnce(&mut Self)) {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push_str(" xmlns=\"");
        escape_into(&mut self.buf, ns);
        self.buf.push_str("\">");
        f(self);
        self.close(name);
    }

    /// `<name>` ... `</name>`, the body written by `f`.
    pub(crate) fn elem(&mut self, name: &str, f: impl FnOnce(&mut Self)) {
        self.open(name);
        f(self);
        self.close(name);
    }

    /// `<name>text</name>`, the text escaped.
    pub(crate) fn leaf(&mut self, name: &str, text: &str) {
        self.open(name);
        escape_into(&mut self.buf, text);
        self.close(name);
    }

    /// `<name>text</name>` when `text` is present.
    pub(crate) fn leaf_opt(&mut self, name: &str, text: Option<&str>) {
        if let Some(text) = text {
            self.leaf(name, text);
        }
    }

    /// `<name>n</name>`.
    pub(crate) fn leaf_num(&mut self, name: &str, n: u64) {
        self.open(name);
        let _ = write!(self.buf, "{n}");
        self.close(name);
    }

    /// `<name>true|false</name>`.
    pub(crate) fn leaf_bool(&mut self, name: &str, b: bool) {
        self.leaf(name, if b { "true" } else { "false" });
    }

    pub(crate) fn finish(self) -> String {
        self.buf
    }

    fn open(&mut self, name: &str) {
        self.buf.push('<');
        self.buf.push_str(name);
        self.buf.push('>');
    }

    fn close(&mut self, name: &str) {
        self.buf.push_str("</");
        self.buf.push_str(name);
        self.buf.push('>');
    }
}

/// Appends `text` escaped for element content or a double-quoted attribute.
pub(crate) fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // A literal CR would be normalised to LF by the reader.
            '\r' => out.push_str("&#13;"),
            '\t' | '\n' => out.push(c),
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_replaces_unrepresentable_characters() {
        let mut out = String::new();
        escape_into(&mut out, "a<b>&\"c'\r\n\t\u{1}\u{FFFF}é");
        assert_eq!(out, "a&lt;b&gt;&amp;&quot;c&apos;&#13;\n\t\u{FFFD}\u{FFFD}é");
    }

    #[test]
    fn writes_nested_elements() {
        let mut x = Xml::new();
        x.root("R", "urn:x", |x| {
            x.elem("A", |x| {
                x.leaf("B", "1 < 2");
                x.leaf_num("N", 42);
                x.leaf_bool("T", true);
                x.leaf_opt("Absent", None);
            });
        });
        assert_eq!(x.finish(), r#"<R xmlns="urn:x"><A><B>1 &lt; 2</B><N>42</N><T>true</T></A></R>"#);
    }
}
