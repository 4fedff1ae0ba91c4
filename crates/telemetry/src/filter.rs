//! CloudWatch Logs filter patterns, as FilterLogEvents takes them.
//!
//! - Terms: `ERROR timeout` (every term), `"exact phrase"`, `?ERROR ?WARN` (any of them),
//!   `-DEBUG` (none of them). Matching is case-sensitive, as in CloudWatch.
//! - JSON: `{ $.tenantId = "BlueTenant" }`, with `=`, `!=`, `<`, `<=`, `>`, `>=`, `*` wildcards
//!   in strings, numbers, `true`/`false`/`NULL`, `EXISTS`/`NOT EXISTS`, `&&`, `||` and
//!   parentheses; only messages that are JSON objects can match.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq)]
pub enum FilterPattern {
    /// Matches everything.
    All,
    Terms {
        all: Vec<String>,
        any: Vec<String>,
        none: Vec<String>,
    },
    Json(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Cmp { path: Vec<String>, op: Op, value: Literal },
    Exists { path: Vec<String>, exists: bool },
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

impl FilterPattern {
    pub fn parse(pattern: &str) -> Result<Self, String> {
        let p = pattern.trim();
        if p.is_empty() {
            return Ok(Self::All);
        }
        if p.starts_with('{') {
            let inner = p.strip_prefix('{').and_then(|s| s.strip_suffix('}')).ok_or("unbalanced braces")?;
            let tokens = tokenize(inner)?;
            let mut parser = Parser::new(tokens);
            let e = parser.or()?;
            if let Some(t) = parser.peek() {
                return Err(format!("unexpected {t:?}"));
            }
            return Ok(Self::Json(e));
        }
        let (mut all, mut any, mut none) = (Vec::new(), Vec::new(), Vec::new());
        for term in split_terms(p)? {
            if let Some(t) = term.strip_prefix('?') {
                any.push(unquote(t));
            } else if let Some(t) = term.strip_prefix('-') {
                none.push(unquote(t));
            } else {
                all.push(unquote(&term));
            }
        }
        Ok(Self::Terms { all, any, none })
    }

    pub fn matches(&self, message: &str) -> bool {
        match self {
            Self::All => true,
            Self::Terms { all, any, none } => {
                all.iter().all(|t| message.contains(t.as_str()))
                    && (any.is_empty() || any.iter().any(|t| message.contains(t.as_str())))
                    && !none.iter().any(|t| message.contains(t.as_str()))
            }
            Self::Json(e) => match serde_json::from_str::<Value>(message.trim()) {
                Ok(v @ Value::Object(_)) => e.eval(&v),
                _ => false,
            },
        }
    }
}

fn unquote(t: &str) -> String {
    t.strip_prefix('"').and_then(|s| s.strip_suffix('"')).unwrap_or(t).to_string()
}

/// Terms separated by spaces, a quoted phrase kept whole.
fn split_terms(p: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in p.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                cur.push(c);
            }
            c if c.is_whitespace() && !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err("unbalanced quotes".into());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Path(Vec<String>),
    Op(Op),
    And,
    Or,
    Open,
    Close,
    Lit(Literal),
    Exists(bool),
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::Open);
                i += 1;
            }
            ')' => {
                out.push(Tok::Close);
                i += 1;
            }
            '&' if next == Some('&') => {
                out.push(Tok::And);
                i += 2;
            }
            '|' if next == Some('|') => {
                out.push(Tok::Or);
                i += 2;
            }
            '=' => {
                out.push(Tok::Op(Op::Eq));
                i += 1 + usize::from(next == Some('='));
            }
            '!' if next == Some('=') => {
                out.push(Tok::Op(Op::Ne));
                i += 2;
            }
            '<' => {
                out.push(Tok::Op(if next == Some('=') { Op::Le } else { Op::Lt }));
                i += 1 + usize::from(next == Some('='));
            }
            '>' => {
                out.push(Tok::Op(if next == Some('=') { Op::Ge } else { Op::Gt }));
                i += 1 + usize::from(next == Some('='));
            }
            '"' => {
                let mut j = i + 1;
                let mut v = String::new();
                while j < chars.len() && chars[j] != '"' {
                    if chars[j] == '\\' && j + 1 < chars.len() {
                        j += 1;
                    }
                    v.push(chars[j]);
                    j += 1;
                }
                if j >= chars.len() {
                    return Err("unbalanced quotes".into());
                }
                out.push(Tok::Lit(Literal::Str(v)));
                i = j + 1;
            }
            '$' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_alphanumeric() || "._-[]".contains(chars[j])) {
                    j += 1;
                }
                let raw: String = chars[i + 1..j].iter().collect();
                let path: Vec<String> =
                    raw.split(['.', '[', ']']).filter(|p| !p.is_empty()).map(str::to_string).collect();
                if path.is_empty() {
                    return Err("a selector needs a field: $.name".into());
                }
                out.push(Tok::Path(path));
                i = j;
            }
            _ => {
                let mut j = i;
                while j < chars.len() && !chars[j].is_whitespace() && !"()=!<>&|".contains(chars[j]) {
                    j += 1;
                }
                let word: String = chars[i..j].iter().collect();
                if word.is_empty() {
                    return Err(format!("unexpected '{c}'"));
                }
                let tok = match word.as_str() {
                    "true" => Tok::Lit(Literal::Bool(true)),
                    "false" => Tok::Lit(Literal::Bool(false)),
                    "NULL" | "null" => Tok::Lit(Literal::Null),
                    "EXISTS" => Tok::Exists(true),
                    "NOT" => {
                        // NOT EXISTS
                        let rest: String = chars[j..].iter().collect();
                        let trimmed = rest.trim_start();
                        if let Some(after) = trimmed.strip_prefix("EXISTS") {
                            out.push(Tok::Exists(false));
                            i = chars.len() - after.chars().count();
                            continue;
                        }
                        return Err("NOT must be followed by EXISTS".into());
                    }
                    w => match w.parse::<f64>() {
                        Ok(n) => Tok::Lit(Literal::Num(n)),
                        Err(_) => Tok::Lit(Literal::Str(w.to_string())),
                    },
                };
                out.push(tok);
                i = j;
            }
        }
    }
    Ok(out)
}

type Parser = crate::cursor::Cursor<Tok>;

impl Parser {
    fn or(&mut self) -> Result<Expr, String> {
        let mut left = self.and()?;
        while self.peek() == Some(&Tok::Or) {
            self.at += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut left = self.atom()?;
        while self.peek() == Some(&Tok::And) {
            self.at += 1;
            left = Expr::And(Box::new(left), Box::new(self.atom()?));
        }
        Ok(left)
    }

    fn atom(&mut self) -> Result<Expr, String> {
        match self.next() {
            Some(Tok::Open) => {
                let e = self.or()?;
                match self.next() {
                    Some(Tok::Close) => Ok(e),
                    _ => Err("unbalanced parentheses".into()),
                }
            }
            Some(Tok::Path(path)) => match self.next() {
                Some(Tok::Exists(exists)) => Ok(Expr::Exists { path, exists }),
                Some(Tok::Op(op)) => match self.next() {
                    Some(Tok::Lit(value)) => Ok(Expr::Cmp { path, op, value }),
                    other => Err(format!("expected a value, found {other:?}")),
                },
                other => Err(format!("expected an operator, found {other:?}")),
            },
            other => Err(format!("expected a selector such as $.field, found {other:?}")),
        }
    }
}

fn lookup<'a>(v: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(v, |v, key| match v {
        Value::Object(m) => m.get(key),
        Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
        _ => None,
    })
}

/// `*` matches any run of characters.
fn wildcard(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == text;
    }
    let mut rest = text;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            let Some(r) = rest.strip_prefix(part) else { return false };
            rest = r;
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
    }
    true
}

impl Expr {
    pub fn eval(&self, v: &Value) -> bool {
        match self {
            Self::And(a, b) => a.eval(v) && b.eval(v),
            Self::Or(a, b) => a.eval(v) || b.eval(v),
            Self::Exists { path, exists } => lookup(v, path).is_some() == *exists,
            Self::Cmp { path, op, value } => {
                let Some(field) = lookup(v, path) else { return false };
                match (value, field) {
                    (Literal::Str(s), Value::String(f)) => match op {
                        Op::Eq => wildcard(s, f),
                        Op::Ne => !wildcard(s, f),
                        _ => false,
                    },
                    (Literal::Num(n), Value::Number(f)) => {
                        let f = f.as_f64().unwrap_or(f64::NAN);
                        match op {
                            Op::Eq => f == *n,
                            Op::Ne => f != *n,
                            Op::Lt => f < *n,
                            Op::Le => f <= *n,
                            Op::Gt => f > *n,
                            Op::Ge => f >= *n,
                        }
                    }
                    (Literal::Bool(b), Value::Bool(f)) => match op {
                        Op::Eq => f == b,
                        Op::Ne => f != b,
                        _ => false,
                    },
                    (Literal::Null, Value::Null) => *op == Op::Eq,
                    (Literal::Null, _) => *op == Op::Ne,
                    _ => *op == Op::Ne,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, msg: &str) -> bool {
        FilterPattern::parse(p).expect("pattern").matches(msg)
    }

    #[test]
    fn terms() {
        assert!(m("", "anything"));
        assert!(m("ERROR timeout", "ERROR: a timeout happened"));
        assert!(!m("ERROR timeout", "ERROR only"));
        assert!(m("\"a timeout\"", "ERROR: a timeout happened"));
        assert!(m("?WARN ?ERROR", "ERROR x") && !m("?WARN ?ERROR", "INFO x"));
        assert!(!m("ERROR -retry", "ERROR retry"));
        assert!(!m("error", "ERROR"), "case-sensitive");
    }

    #[test]
    fn json() {
        let rec = r#"{"level":"INFO","tenantId":"BlueTenant","latency":120,"ok":true,"record":{"tenantId":"x"}}"#;
        assert!(m(r#"{ $.tenantId = "BlueTenant" }"#, rec));
        assert!(!m(r#"{ $.tenantId = "GreenTenant" }"#, rec));
        assert!(m(r#"{ $.tenantId = "Blue*" }"#, rec));
        assert!(m(r#"{ $.tenantId != "GreenTenant" }"#, rec));
        assert!(m(r#"{ $.latency > 100 && $.ok = true }"#, rec));
        assert!(m(r#"{ ($.latency < 100) || $.record.tenantId = "x" }"#, rec));
        assert!(m(r#"{ $.record EXISTS }"#, rec) && m(r#"{ $.nope NOT EXISTS }"#, rec));
        assert!(!m(r#"{ $.tenantId = "BlueTenant" }"#, "BlueTenant in text"));
        assert!(FilterPattern::parse("{ $.a = }").is_err());
        assert!(FilterPattern::parse("{ $.a = \"x\"").is_err());
    }
}
