//! Wildcard patterns with policy variables, compiled once at parse time and matched without allocating.
//!
//! A [`Template`] is a sequence of tokens: literal text, `*` (any run of characters, including none), `?`
//! (exactly one character) and policy variables (`${aws:PrincipalTag/TenantId}`). Matching resolves the
//! variables from the [`Context`] into a small stack buffer and runs an iterative glob matcher over the
//! token stream: the classic "remember the last star" algorithm, which is O(pattern × text) in the worst
//! case and never backtracks exponentially.
//!
//! Variable values are inserted as *literal* text: a tag value containing `*` does not become a wildcard.

use crate::context::{Context, lower};

/// Variables resolved on the stack; more than this many in one pattern spills to the heap.
const INLINE_VARS: usize = 8;

/// One token of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    /// Literal text (never empty).
    Lit(Box<str>),
    /// `*`: any run of characters.
    Star,
    /// `?`: exactly one character.
    One,
    /// `${key}` or `${key, 'default'}`.
    Var(Var),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Var {
    /// The context key, lower-cased.
    key: Box<str>,
    /// Used when the key is missing (or multi-valued).
    default: Option<Box<str>>,
    /// Index into the resolved-values buffer.
    slot: usize,
}

impl Var {
    fn resolve<'a>(&'a self, ctx: &'a Context) -> Option<&'a str> {
        ctx.single_lower(&self.key).or(self.default.as_deref())
    }
}

/// Shortcuts for the common shapes; `General` covers everything, the rest are fast paths.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Shape {
    /// Exactly `*`.
    Any,
    /// Literal text only.
    Exact(Box<str>),
    /// Literal text followed by one `*` (`s3:Get*`, `arn:aws:s3:::bucket/*`).
    Prefix(Box<str>),
    /// Anything else, including every pattern with variables.
    General,
}

/// How a pattern's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Syntax {
    /// `*` and `?` are wildcards (Action, Resource, `StringLike`, `Arn*`); otherwise literal (`StringEquals`).
    pub wildcards: bool,
    /// `${...}` is a policy variable (policy `Version` 2012-10-17, in Resource and condition values).
    pub variables: bool,
}

/// A compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Template {
    source: Box<str>,
    toks: Box<[Tok]>,
    shape: Shape,
    vars: usize,
}

impl Template {
    /// Compiles `source`; the error says what is wrong with a policy variable.
    pub(crate) fn compile(source: &str, syntax: Syntax) -> Result<Self, String> {
        let mut toks: Vec<Tok> = Vec::new();
        let mut lit = String::new();
        let mut vars = 0;
        let flush = |lit: &mut String, toks: &mut Vec<Tok>| {
            if !lit.is_empty() {
                toks.push(Tok::Lit(std::mem::take(lit).into_boxed_str()));
            }
        };
        let mut rest = source;
        while let Some(c) = rest.chars().next() {
            if syntax.variables && rest.starts_with("${") {
                let Some(close) = rest.find('}') else {
                    return Err(format!("unterminated policy variable in {source:?}"));
                };
                let inner = &rest[2..close];
                rest = &rest[close + 1..];
                match inner {
                    "*" | "?" | "$" => lit.push_str(inner),
                    _ => {
                        let (key, default) = parse_variable(inner).map_err(|why| format!("{why} in {source:?}"))?;
                        flush(&mut lit, &mut toks);
                        toks.push(Tok::Var(Var { key: lower(key), default, slot: vars }));
                        vars += 1;
                    }
                }
                continue;
            }
            rest = &rest[c.len_utf8()..];
            match c {
                '*' if syntax.wildcards => {
                    flush(&mut lit, &mut toks);
                    // `**` is `*`; collapsing keeps the matcher's work down.
                    if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '?' if syntax.wildcards => {
                    flush(&mut lit, &mut toks);
                    toks.push(Tok::One);
                }
                _ => lit.push(c),
            }
        }
        flush(&mut lit, &mut toks);
        let shape = match toks.as_slice() {
            _ if vars > 0 => Shape::General,
            [] => Shape::Exact("".into()),
            [Tok::Star] => Shape::Any,
            [Tok::Lit(s)] => Shape::Exact(s.clone()),
            [Tok::Lit(s), Tok::Star] => Shape::Prefix(s.clone()),
            _ => Shape::General,
        };
        Ok(Self { source: source.into(), toks: toks.into_boxed_slice(), shape, vars })
    }

    /// Compiles the lower-cased `source` (for actions, matched against a lower-cased request action), keeping
    /// `source` as written for serialisation.
    pub(crate) fn compile_lowercase(source: &str, syntax: Syntax) -> Result<Self, String> {
        let mut t = Self::compile(&source.to_lowercase(), syntax)?;
        t.source = source.into();
        Ok(t)
    }

    /// The pattern as written in the policy.
    pub(crate) fn source(&self) -> &str {
        &self.source
    }

    /// Whether the pattern contains a policy variable.
    #[cfg(test)]
    pub(crate) fn has_variables(&self) -> bool {
        self.vars > 0
    }

    /// Whether the whole of `text` matches. `fold` compares case-insensitively (actions,
    /// `StringEqualsIgnoreCase`). False when a variable cannot be resolved from `ctx`.
    pub(crate) fn matches(&self, text: &str, ctx: &Context, fold: bool) -> bool {
        match &self.shape {
            Shape::Any => true,
            Shape::Exact(s) => str_eq(s, text, fold),
            Shape::Prefix(p) => strip_prefix(text, p, fold).is_some(),
            Shape::General => self
                .with_values(ctx, |vals| {
                    let pat = Pat { toks: &self.toks, vals };
                    glob(&pat, pat.start(), pat.end(), text, fold)
                })
                .unwrap_or(false),
        }
    }

    /// ARN matching (`ArnEquals`, `ArnLike`): the colon-separated components are matched one by one, so a
    /// wildcard never crosses a `:` except in the last (resource) component. A pattern with fewer than six
    /// components matches the rest of the ARN with its last component; a lone `*` matches any value.
    pub(crate) fn matches_arn(&self, text: &str, ctx: &Context) -> bool {
        if self.shape == Shape::Any {
            return true;
        }
        self.with_values(ctx, |vals| {
            let pat = Pat { toks: &self.toks, vals };
            // Component boundaries in the pattern: (end of component, start of the next).
            let mut bounds = [(pat.end(), pat.end()); 5];
            let mut n = 0;
            let mut p = pat.start();
            while n < bounds.len()
                && let Some((elem, next)) = pat.elem(p)
            {
                if elem == Elem::Char(':') {
                    bounds[n] = (p, next);
                    n += 1;
                }
                p = next;
            }
            let mut text_rest = text;
            let mut pat_start = pat.start();
            for &(pat_end, pat_next) in &bounds[..n] {
                let Some((component, after)) = text_rest.split_once(':') else {
                    return false;
                };
                if !glob(&pat, pat_start, pat_end, component, false) {
                    return false;
                }
                text_rest = after;
                pat_start = pat_next;
            }
            glob(&pat, pat_start, pat.end(), text_rest, false)
        })
        .unwrap_or(false)
    }

    /// Resolves the variables into a buffer and runs `f` over it; `None` when one cannot be resolved.
    fn with_values<'a, R>(&'a self, ctx: &'a Context, f: impl FnOnce(&[&'a str]) -> R) -> Option<R> {
        if self.vars == 0 {
            return Some(f(&[]));
        }
        let mut inline = [""; INLINE_VARS];
        let mut heap = Vec::new();
        let vals: &mut [&'a str] = if self.vars <= INLINE_VARS {
            &mut inline[..self.vars]
        } else {
            heap.resize(self.vars, "");
            &mut heap
        };
        for tok in self.toks.iter() {
            if let Tok::Var(v) = tok {
                vals[v.slot] = v.resolve(ctx)?;
            }
        }
        Some(f(vals))
    }
}

/// Splits `key, 'default'` (IAM's default-value syntax) or returns the bare key.
fn parse_variable(inner: &str) -> Result<(&str, Option<Box<str>>), &'static str> {
    let (key, default) = match inner.split_once(',') {
        None => (inner, None),
        Some((key, rest)) => {
            let rest = rest.trim();
            let quoted = rest.len() >= 2 && rest.starts_with('\'') && rest.ends_with('\'');
            if !quoted {
                return Err("policy variable default must be in single quotes (${key, 'default'})");
            }
            (key.trim(), Some(rest[1..rest.len() - 1].into()))
        }
    };
    if key.is_empty() {
        return Err("empty policy variable");
    }
    if key.contains(['$', '{', '\'']) {
        return Err("malformed policy variable");
    }
    Ok((key, default))
}

/// A pattern position: token index and byte offset inside a literal (or resolved variable).
/// Always normalised: never at the end of a literal unless at the end of the pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    tok: usize,
    off: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Elem {
    Char(char),
    Star,
    One,
}

/// A run of a pattern, for the matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seg<'a> {
    Lit(&'a str),
    Star,
    One,
}

/// A pattern's tokens with its variables resolved.
struct Pat<'a> {
    toks: &'a [Tok],
    vals: &'a [&'a str],
}

impl<'a> Pat<'a> {
    fn text(&self, tok: &'a Tok) -> Option<&'a str> {
        match tok {
            Tok::Lit(s) => Some(s),
            Tok::Var(v) => Some(self.vals[v.slot]),
            Tok::Star | Tok::One => None,
        }
    }

    fn norm(&self, mut p: Pos) -> Pos {
        while let Some(tok) = self.toks.get(p.tok) {
            match self.text(tok) {
                Some(s) if p.off >= s.len() => p = Pos { tok: p.tok + 1, off: 0 },
                _ => break,
            }
        }
        p
    }

    fn start(&self) -> Pos {
        self.norm(Pos { tok: 0, off: 0 })
    }

    fn end(&self) -> Pos {
        Pos { tok: self.toks.len(), off: 0 }
    }

    /// The run of pattern at `p` (a whole literal, or one wildcard) up to `end`, and the position after it.
    fn segment(&self, p: Pos, end: Pos) -> Option<(Seg<'a>, Pos)> {
        if p == end {
            return None;
        }
        let tok = self.toks.get(p.tok)?;
        Some(match self.text(tok) {
            Some(s) => {
                let stop = if end.tok == p.tok { end.off } else { s.len() };
                (Seg::Lit(&s[p.off..stop]), self.norm(Pos { tok: p.tok, off: stop }))
            }
            None if *tok == Tok::Star => (Seg::Star, self.norm(Pos { tok: p.tok + 1, off: 0 })),
            None => (Seg::One, self.norm(Pos { tok: p.tok + 1, off: 0 })),
        })
    }

    /// The element at `p` and the position after it.
    fn elem(&self, p: Pos) -> Option<(Elem, Pos)> {
        let tok = self.toks.get(p.tok)?;
        let (elem, next) = match self.text(tok) {
            Some(s) => {
                let c = s[p.off..].chars().next()?;
                (Elem::Char(c), Pos { tok: p.tok, off: p.off + c.len_utf8() })
            }
            None if *tok == Tok::Star => (Elem::Star, Pos { tok: p.tok + 1, off: 0 }),
            None => (Elem::One, Pos { tok: p.tok + 1, off: 0 }),
        };
        Some((elem, self.norm(next)))
    }
}

/// Matches the pattern range `[start, end)` against the whole of `text`.
///
/// Greedy with one backtrack point: a `*` first matches nothing; on a mismatch the most recent `*` takes one
/// more character (or, when a literal follows it, jumps to that literal's next occurrence) and matching
/// resumes after it. Earlier stars never need revisiting, so the work is bounded by pattern × text.
fn glob(pat: &Pat<'_>, start: Pos, end: Pos, text: &str, fold: bool) -> bool {
    let mut p = start;
    let mut t = 0;
    // After a `*`: where the pattern resumes, and where in the text the star's match currently ends.
    let mut resume: Option<(Pos, usize)> = None;
    loop {
        if let Some((seg, next)) = pat.segment(p, end) {
            let rest = &text[t..];
            let advanced = match seg {
                Seg::Star => {
                    resume = Some((next, t));
                    Some(t)
                }
                Seg::One => rest.chars().next().map(|c| t + c.len_utf8()),
                Seg::Lit(lit) => strip_prefix(rest, lit, fold).map(|after| text.len() - after.len()),
            };
            if let Some(advanced) = advanced {
                t = advanced;
                p = next;
                continue;
            }
        } else if t == text.len() {
            return true;
        }
        // Mismatch: let the last star swallow more and retry from just after it.
        let Some((star_next, star_end)) = resume else { return false };
        let Some(c) = text[star_end..].chars().next() else { return false };
        let mut star_end = star_end + c.len_utf8();
        if !fold && let Some((Seg::Lit(lit), _)) = pat.segment(star_next, end) {
            // Only a position where the following literal occurs can work.
            let Some(found) = text[star_end..].find(lit) else { return false };
            star_end += found;
        }
        resume = Some((star_next, star_end));
        p = star_next;
        t = star_end;
    }
}

fn char_eq(a: char, b: char, fold: bool) -> bool {
    a == b
        || (fold
            && (a.eq_ignore_ascii_case(&b)
                || (!(a.is_ascii() && b.is_ascii()) && a.to_lowercase().eq(b.to_lowercase()))))
}

/// String equality, optionally case-insensitive, without allocating.
pub(crate) fn str_eq(a: &str, b: &str, fold: bool) -> bool {
    if !fold {
        return a == b;
    }
    if a.is_ascii() && b.is_ascii() {
        return a.eq_ignore_ascii_case(b);
    }
    let mut x = a.chars();
    let mut y = b.chars();
    loop {
        match (x.next(), y.next()) {
            (None, None) => return true,
            (Some(c), Some(d)) if char_eq(c, d, true) => {}
            _ => return false,
        }
    }
}

fn strip_prefix<'t>(text: &'t str, prefix: &str, fold: bool) -> Option<&'t str> {
    if !fold {
        return text.strip_prefix(prefix);
    }
    let mut rest = text;
    for pc in prefix.chars() {
        let c = rest.chars().next()?;
        if !char_eq(pc, c, true) {
            return None;
        }
        rest = &rest[c.len_utf8()..];
    }
    Some(rest)
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;

    const GLOB: Syntax = Syntax { wildcards: true, variables: false };
    const GLOB_VARS: Syntax = Syntax { wildcards: true, variables: true };
    const LITERAL_VARS: Syntax = Syntax { wildcards: false, variables: true };

    fn t(src: &str, syntax: Syntax) -> Template {
        Template::compile(src, syntax).expect("pattern compiles")
    }

    fn m(pattern: &str, text: &str) -> bool {
        t(pattern, GLOB).matches(text, &Context::new(), false)
    }

    #[test]
    fn wildcards() {
        assert!(m("*", ""));
        assert!(m("*", "anything:at/all"));
        assert!(m("a*c", "ac"));
        assert!(m("a*c", "abbbc"));
        assert!(!m("a*c", "abbbd"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(!m("a?c", "abbc"));
        assert!(m("*b*", "abc"));
        assert!(m("a*b*c", "a-b-b-c"));
        assert!(!m("a*b*c", "a-c-b"));
        assert!(m("??", "ab"));
        assert!(!m("??", "abc"));
        assert!(m("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a/b"));
        assert!(!m("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket2/a"));
        assert!(m("x*", "x"), "prefix fast path matches the empty rest");
        assert!(!m("abc", "abcd"));
        assert!(!m("abc", "ABC"), "case-sensitive unless folding");
    }

    #[test]
    fn question_mark_is_one_character_not_one_byte() {
        assert!(m("caf?", "café"));
        assert!(m("?", "日"));
        assert!(!m("??", "日"));
        assert!(m("*é", "résumé"));
    }

    #[test]
    fn folding() {
        let ctx = Context::new();
        assert!(t("s3:Get*", GLOB).matches("S3:GETOBJECT", &ctx, true));
        assert!(t("S3:GetObject", GLOB).matches("s3:getobject", &ctx, true));
        assert!(t("s3:*Object?", GLOB).matches("S3:PutOBJECTS", &ctx, true));
        assert!(!t("s3:Get*", GLOB).matches("s3:PutObject", &ctx, true));
        assert!(str_eq("ÉCOLE", "école", true));
        assert!(!str_eq("ÉCOLE", "école", false));
    }

    #[test]
    fn star_runs_collapse() {
        assert_eq!(t("a***b", GLOB).toks.len(), 3);
        assert_eq!(t("***", GLOB).shape, Shape::Any);
    }

    #[test]
    fn pathological_patterns_finish_quickly() {
        // Exponential backtracking would never finish on these.
        let text = "a".repeat(20_000);
        let pattern = format!("{}b", "a*".repeat(200));
        let started = Instant::now();
        assert!(!m(&pattern, &text));
        let q = format!("{}b", "*?".repeat(100));
        assert!(!m(&q, &text));
        assert!(m(&format!("{}a", "*a".repeat(100)), &text));
        // The matcher's real worst case, O(pattern × text): one star, then a long near-miss.
        assert!(!m(&format!("*{}b", "a".repeat(300)), &text));
        assert!(started.elapsed() < Duration::from_secs(5), "took {:?}", started.elapsed());
    }

    #[test]
    fn variables_substitute_literally() {
        let ctx = Context::new().with("aws:PrincipalTag/TenantId", "blue").with("aws:username", "a*b");
        let p = t("arn:aws:s3:::tenant-data/${aws:PrincipalTag/TenantId}/*", GLOB_VARS);
        assert!(p.has_variables());
        assert!(p.matches("arn:aws:s3:::tenant-data/blue/x", &ctx, false));
        assert!(!p.matches("arn:aws:s3:::tenant-data/green/x", &ctx, false));
        assert!(!p.matches("arn:aws:s3:::tenant-data/blue", &ctx, false));
        // Variable keys are case-insensitive.
        assert!(t("${AWS:PRINCIPALTAG/tenantid}", GLOB_VARS).matches("blue", &ctx, false));
        // A `*` in a value is literal text, not a wildcard.
        let user = t("home/${aws:username}", GLOB_VARS);
        assert!(user.matches("home/a*b", &ctx, false));
        assert!(!user.matches("home/aXXb", &ctx, false));
    }

    #[test]
    fn missing_variable_never_matches_even_literally() {
        let ctx = Context::new();
        let p = t("tenant-data/${aws:PrincipalTag/TenantId}/*", GLOB_VARS);
        assert!(!p.matches("tenant-data/${aws:PrincipalTag/TenantId}/x", &ctx, false));
        assert!(!p.matches("tenant-data//x", &ctx, false));
        // Multi-valued keys cannot be substituted either.
        let multi = Context::new().with("aws:PrincipalTag/TenantId", "a").with("aws:PrincipalTag/TenantId", "b");
        assert!(!p.matches("tenant-data/a/x", &multi, false));
    }

    #[test]
    fn defaults_and_escapes() {
        let p = t("team/${aws:PrincipalTag/team, 'company-wide'}/*", GLOB_VARS);
        assert!(p.matches("team/company-wide/x", &Context::new(), false));
        let ctx = Context::new().with("aws:PrincipalTag/team", "red");
        assert!(p.matches("team/red/x", &ctx, false));
        assert!(!p.matches("team/company-wide/x", &ctx, false));

        let esc = t("a${*}b${?}c${$}{d}", GLOB_VARS);
        assert!(!esc.has_variables());
        assert!(esc.matches("a*b?c${d}", &Context::new(), false));
        assert!(!esc.matches("aXbYc${d}", &Context::new(), false), "escaped wildcards are literal");

        // Without variable syntax the text is literal.
        assert!(t("${aws:username}", GLOB).matches("${aws:username}", &Context::new(), false));
    }

    #[test]
    fn literal_syntax_treats_wildcards_as_text() {
        let ctx = Context::new().with("aws:username", "bob");
        let p = t("a*-${aws:username}", LITERAL_VARS);
        assert!(p.matches("a*-bob", &ctx, false));
        assert!(!p.matches("ab-bob", &ctx, false));
        assert!(t("${aws:username}", LITERAL_VARS).matches("BOB", &ctx, true));
    }

    #[test]
    fn variable_syntax_errors() {
        for bad in ["${", "a${aws:username", "${}", "${key, default}", "${key, 'x}", "${,'x'}"] {
            assert!(Template::compile(bad, GLOB_VARS).is_err(), "{bad} should not compile");
        }
    }

    #[test]
    fn many_variables_spill_to_the_heap() {
        let mut ctx = Context::new();
        let mut src = String::new();
        let mut text = String::new();
        for i in 0..12 {
            ctx.insert(&format!("k:v{i}"), format!("{i}"));
            src.push_str(&format!("${{k:v{i}}}-"));
            text.push_str(&format!("{i}-"));
        }
        assert!(t(&src, GLOB_VARS).matches(&text, &ctx, false));
    }

    #[test]
    fn arn_components_match_separately() {
        let ctx = Context::new().with("aws:PrincipalArn", "arn:aws:iam::111122223333:role/app");
        let a = |p: &str, text: &str| t(p, GLOB_VARS).matches_arn(text, &ctx);
        assert!(a("arn:aws:iam::*:role/app", "arn:aws:iam::111122223333:role/app"));
        assert!(!a("arn:aws:iam::*:role/app", "arn:aws:iam::1:2:role/app"), "* stays inside its component");
        assert!(a("arn:aws:s3:::bucket/*", "arn:aws:s3:::bucket/a:b/c"), "resource component may hold colons");
        assert!(a("arn:aws:sqs:*:*:queue-?", "arn:aws:sqs:eu-west-1:111122223333:queue-1"));
        assert!(!a("arn:aws:sqs:*:*:queue-?", "arn:aws:sqs:eu-west-1:111122223333:queue-10"));
        assert!(a("*", "not even an arn"));
        assert!(a("arn:aws:iam::*", "arn:aws:iam::111122223333:role/x"), "short pattern: last component absorbs");
        assert!(!a("arn:aws:iam::111122223333:role/app", "arn:aws:iam::111122223333"));
        assert!(a("${aws:PrincipalArn}", "arn:aws:iam::111122223333:role/app"));
        assert!(!a("${aws:PrincipalArn}", "arn:aws:iam::111122223333:role/other"));
        assert!(!a("${aws:SourceArn}", "arn:aws:iam::111122223333:role/app"), "unresolvable");
    }
}
