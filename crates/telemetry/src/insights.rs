//! A CloudWatch Logs Insights subset: `fields`, `filter` (`==`, `!=`, `<`, `<=`, `>`, `>=`,
//! `like`, `and`, `or`, `not`, parentheses), `stats count() / sum / avg / min / max / pct(f, p)
//! [as name] [by a, b]`, `sort f [asc|desc]`, `limit n` and `parse @message "a * b" as x, y`,
//! over `@timestamp`, `@message`, `@logStream`, `@requestId`, `@log` and the fields of JSON
//! messages (dotted paths such as `record.tenantId`).

use std::cmp::Ordering;
use std::collections::BTreeMap;

use serde_json::Value;

use crate::Event;

/// A value a field has in one record.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    Str(String),
    Num(f64),
    Null,
}

impl Val {
    fn from_json(v: &Value) -> Self {
        match v {
            Value::String(s) => Val::Str(s.clone()),
            Value::Number(n) => n.as_f64().map(Val::Num).unwrap_or(Val::Null),
            Value::Bool(b) => Val::Str(b.to_string()),
            Value::Null => Val::Null,
            other => Val::Str(other.to_string()),
        }
    }

    pub fn render(&self) -> String {
        match self {
            Val::Str(s) => s.clone(),
            Val::Num(n) if n.fract() == 0.0 && n.abs() < 1e15 => format!("{}", *n as i64),
            Val::Num(n) => format!("{n}"),
            Val::Null => String::new(),
        }
    }

    fn num(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => s.parse().ok(),
            Val::Null => None,
        }
    }

    fn cmp(&self, o: &Val) -> Option<Ordering> {
        match (self.num(), o.num()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => match (self, o) {
                (Val::Null, _) | (_, Val::Null) => None,
                _ => Some(self.render().cmp(&o.render())),
            },
        }
    }
}

/// One log record with its fields.
pub struct Row<'a> {
    event: &'a Event,
    group: &'a str,
    json: Option<Value>,
    parsed: BTreeMap<String, Val>,
}

impl<'a> Row<'a> {
    pub fn new(event: &'a Event, group: &'a str) -> Self {
        let json = match serde_json::from_str::<Value>(event.message.trim()) {
            Ok(v @ Value::Object(_)) => Some(v),
            _ => None,
        };
        Self { event, group, json, parsed: BTreeMap::new() }
    }

    pub fn get(&self, field: &str) -> Val {
        match field {
            "@timestamp" => Val::Str(crate::fmt_insights_time(self.event.ts_ms)),
            "@message" => Val::Str(self.event.message.clone()),
            "@logStream" => Val::Str(self.event.log_stream.clone()),
            "@log" => Val::Str(self.group.to_string()),
            "@requestId" => self
                .json
                .as_ref()
                .and_then(|j| j.get("requestId").or_else(|| j.pointer("/record/requestId")))
                .map(Val::from_json)
                .or_else(|| request_id_of_text(&self.event.message).map(Val::Str))
                .unwrap_or(Val::Null),
            f => {
                if let Some(v) = self.parsed.get(f) {
                    return v.clone();
                }
                let Some(j) = &self.json else { return Val::Null };
                let pointer = format!("/{}", f.replace('.', "/"));
                j.pointer(&pointer).map(Val::from_json).unwrap_or(Val::Null)
            }
        }
    }
}

/// The request id of a Text-format line (`START RequestId: <id>`, or the app line's third field).
fn request_id_of_text(m: &str) -> Option<String> {
    if let Some(rest) = m.split("RequestId: ").nth(1) {
        return rest.split_whitespace().next().map(str::to_string);
    }
    let parts: Vec<&str> = m.splitn(4, '\t').collect();
    (parts.len() >= 3 && parts[2].len() == 36).then(|| parts[2].to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Field(String),
    Lit(Val),
    Regex(String),
    Cmp(Box<Expr>, CmpOp, Box<Expr>),
    Like(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Agg {
    Count(Option<String>),
    Sum(String),
    Avg(String),
    Min(String),
    Max(String),
    Pct(String, f64),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Fields(Vec<String>),
    Filter(Expr),
    Stats { aggs: Vec<(Agg, String)>, by: Vec<String> },
    Sort { field: String, desc: bool },
    Limit(usize),
    Parse { field: String, pattern: String, names: Vec<String> },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub commands: Vec<Command>,
}

// ------------------------------------------------------------------ lexing

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Regex(String),
    Op(String),
    Comma,
    Open,
    Close,
}

fn lex(s: &str) -> Result<Vec<Tok>, String> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch.is_whitespace() {
            i += 1;
        } else if ch == ',' {
            out.push(Tok::Comma);
            i += 1;
        } else if ch == '(' {
            out.push(Tok::Open);
            i += 1;
        } else if ch == ')' {
            out.push(Tok::Close);
            i += 1;
        } else if ch == '"' || ch == '\'' {
            let mut j = i + 1;
            let mut v = String::new();
            while j < c.len() && c[j] != ch {
                if c[j] == '\\' && j + 1 < c.len() {
                    j += 1;
                }
                v.push(c[j]);
                j += 1;
            }
            if j >= c.len() {
                return Err("a string is not closed".into());
            }
            out.push(Tok::Str(v));
            i = j + 1;
        } else if ch == '/' {
            let mut j = i + 1;
            let mut v = String::new();
            while j < c.len() && c[j] != '/' {
                v.push(c[j]);
                j += 1;
            }
            if j >= c.len() {
                return Err("a regular expression is not closed".into());
            }
            out.push(Tok::Regex(v));
            i = j + 1;
        } else if "=!<>".contains(ch) {
            let two: String = c[i..(i + 2).min(c.len())].iter().collect();
            if ["==", "!=", "<=", ">="].contains(&two.as_str()) {
                out.push(Tok::Op(two));
                i += 2;
            } else if ch == '=' {
                out.push(Tok::Op("==".into()));
                i += 1;
            } else if ch == '!' {
                return Err("'!' must be followed by '='".into());
            } else {
                out.push(Tok::Op(ch.to_string()));
                i += 1;
            }
        } else if ch.is_ascii_digit() || (ch == '-' && c.get(i + 1).is_some_and(|d| d.is_ascii_digit())) {
            let mut j = i + 1;
            while j < c.len() && (c[j].is_ascii_digit() || c[j] == '.') {
                j += 1;
            }
            let t: String = c[i..j].iter().collect();
            out.push(Tok::Num(t.parse().map_err(|_| format!("bad number {t}"))?));
            i = j;
        } else if ch.is_alphanumeric() || "@_.`".contains(ch) {
            let mut j = i;
            while j < c.len() && (c[j].is_alphanumeric() || "@_.`-".contains(c[j])) {
                j += 1;
            }
            out.push(Tok::Ident(c[i..j].iter().filter(|x| **x != '`').collect()));
            i = j;
        } else {
            return Err(format!("unexpected '{ch}'"));
        }
    }
    Ok(out)
}

/// Split at the `|` outside strings and regular expressions.
fn split_commands(q: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    for ch in q.chars() {
        match quote {
            Some(qc) if ch == qc => {
                quote = None;
                cur.push(ch);
            }
            Some(_) => cur.push(ch),
            None if ch == '"' || ch == '\'' || ch == '/' => {
                quote = Some(ch);
                cur.push(ch);
            }
            None if ch == '|' => out.push(std::mem::take(&mut cur)),
            None => cur.push(ch),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

// ------------------------------------------------------------------ parsing

type P = crate::cursor::Cursor<Tok>;

impl P {
    fn keyword(&mut self, k: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Ident(i)) if i.eq_ignore_ascii_case(k)) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    fn ident(&mut self) -> Result<String, String> {
        match self.next() {
            Some(Tok::Ident(i)) => Ok(i),
            other => Err(format!("expected a field name, found {other:?}")),
        }
    }

    fn or(&mut self) -> Result<Expr, String> {
        let mut l = self.and()?;
        while self.keyword("or") {
            l = Expr::Or(Box::new(l), Box::new(self.and()?));
        }
        Ok(l)
    }

    fn and(&mut self) -> Result<Expr, String> {
        let mut l = self.not()?;
        while self.keyword("and") {
            l = Expr::And(Box::new(l), Box::new(self.not()?));
        }
        Ok(l)
    }

    fn not(&mut self) -> Result<Expr, String> {
        if self.keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.cmp()
    }

    fn cmp(&mut self) -> Result<Expr, String> {
        let l = self.atom()?;
        if self.keyword("like") {
            return Ok(Expr::Like(Box::new(l), Box::new(self.atom()?)));
        }
        if self.keyword("not") {
            if !self.keyword("like") {
                return Err("expected 'like' after 'not'".into());
            }
            return Ok(Expr::Not(Box::new(Expr::Like(Box::new(l), Box::new(self.atom()?)))));
        }
        if let Some(Tok::Op(op)) = self.peek().cloned() {
            self.at += 1;
            let op = match op.as_str() {
                "==" => CmpOp::Eq,
                "!=" => CmpOp::Ne,
                "<" => CmpOp::Lt,
                "<=" => CmpOp::Le,
                ">" => CmpOp::Gt,
                _ => CmpOp::Ge,
            };
            return Ok(Expr::Cmp(Box::new(l), op, Box::new(self.atom()?)));
        }
        Ok(l)
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
            Some(Tok::Str(s)) => Ok(Expr::Lit(Val::Str(s))),
            Some(Tok::Num(n)) => Ok(Expr::Lit(Val::Num(n))),
            Some(Tok::Regex(r)) => Ok(Expr::Regex(r)),
            Some(Tok::Ident(i)) => Ok(Expr::Field(i)),
            other => Err(format!("unexpected {other:?}")),
        }
    }

    fn done(&self) -> Result<(), String> {
        match self.peek() {
            None => Ok(()),
            Some(t) => Err(format!("unexpected {t:?}")),
        }
    }
}

fn field_list(p: &mut P) -> Result<Vec<String>, String> {
    let mut out = vec![p.ident()?];
    while p.peek() == Some(&Tok::Comma) {
        p.at += 1;
        out.push(p.ident()?);
    }
    Ok(out)
}

fn agg(p: &mut P) -> Result<(Agg, String), String> {
    let name = p.ident()?.to_ascii_lowercase();
    if p.next() != Some(Tok::Open) {
        return Err(format!("expected '(' after {name}"));
    }
    let arg = match p.peek() {
        Some(Tok::Close) => None,
        _ => Some(p.ident()?),
    };
    let pct = if name == "pct" || name == "percentile" {
        if p.next() != Some(Tok::Comma) {
            return Err("pct needs a field and a percentile".into());
        }
        match p.next() {
            Some(Tok::Num(n)) => Some(n),
            _ => return Err("pct needs a number".into()),
        }
    } else {
        None
    };
    if p.next() != Some(Tok::Close) {
        return Err(format!("expected ')' to close {name}"));
    }
    let need = |a: Option<String>| a.ok_or_else(|| format!("{name}() needs a field"));
    let label_arg = arg.clone().unwrap_or_default();
    let a = match name.as_str() {
        "count" => Agg::Count(arg),
        "sum" => Agg::Sum(need(arg)?),
        "avg" => Agg::Avg(need(arg)?),
        "min" => Agg::Min(need(arg)?),
        "max" => Agg::Max(need(arg)?),
        "pct" | "percentile" => Agg::Pct(need(arg)?, pct.unwrap_or(50.0)),
        other => return Err(format!("unsupported stats function {other}()")),
    };
    let mut label = match &a {
        Agg::Pct(_, n) => format!("{name}({label_arg}, {n})"),
        _ => format!("{name}({label_arg})"),
    };
    if p.keyword("as") {
        label = p.ident()?;
    }
    Ok((a, label))
}

impl Query {
    pub fn parse(q: &str) -> Result<Self, String> {
        let mut commands = Vec::new();
        for part in split_commands(q) {
            let (word, rest) = part.split_once(char::is_whitespace).unwrap_or((part.as_str(), ""));
            let mut p = P::new(lex(rest)?);
            let cmd = match word.to_ascii_lowercase().as_str() {
                "fields" | "display" => Command::Fields(field_list(&mut p)?),
                "filter" => Command::Filter(p.or()?),
                "stats" => {
                    let mut aggs = vec![agg(&mut p)?];
                    while p.peek() == Some(&Tok::Comma) {
                        p.at += 1;
                        aggs.push(agg(&mut p)?);
                    }
                    let by = if p.keyword("by") { field_list(&mut p)? } else { Vec::new() };
                    Command::Stats { aggs, by }
                }
                "sort" => {
                    let field = p.ident()?;
                    let desc = if p.keyword("desc") {
                        true
                    } else {
                        p.keyword("asc");
                        false
                    };
                    Command::Sort { field, desc }
                }
                "limit" => match p.next() {
                    Some(Tok::Num(n)) if (1.0..=10_000.0).contains(&n) => Command::Limit(n as usize),
                    _ => return Err("limit needs a number between 1 and 10000".into()),
                },
                "parse" => {
                    let field = p.ident()?;
                    let pattern = match p.next() {
                        Some(Tok::Str(s)) => s,
                        _ => return Err("parse needs a pattern in quotes".into()),
                    };
                    if !p.keyword("as") {
                        return Err("parse needs 'as' and field names".into());
                    }
                    let names = field_list(&mut p)?;
                    if names.len() != pattern.matches('*').count() {
                        return Err("parse needs one name per '*' of its pattern".into());
                    }
                    Command::Parse { field, pattern, names }
                }
                other => return Err(format!("unsupported command '{other}'")),
            };
            p.done()?;
            commands.push(cmd);
        }
        if commands.is_empty() {
            return Err("the query is empty".into());
        }
        Ok(Self { commands })
    }

    /// Tenants the query's first filter is limited to, when it is only `tenantId == 'X'`
    /// (or `record.tenantId == 'X'`, or a disjunction of those): a superset the store can select
    /// by its tenant index before the exact filter runs.
    pub fn tenant_hint(&self) -> Option<Vec<String>> {
        fn tenants(e: &Expr, out: &mut Vec<String>) -> bool {
            match e {
                Expr::Or(a, b) => tenants(a, out) && tenants(b, out),
                Expr::Cmp(l, CmpOp::Eq, r) => match (&**l, &**r) {
                    (Expr::Field(f), Expr::Lit(Val::Str(t))) | (Expr::Lit(Val::Str(t)), Expr::Field(f))
                        if f == "tenantId" || f == "record.tenantId" =>
                    {
                        out.push(t.clone());
                        true
                    }
                    _ => false,
                },
                _ => false,
            }
        }
        let first = self.commands.iter().find_map(|c| match c {
            Command::Filter(e) => Some(e),
            Command::Parse { .. } => None,
            _ => None,
        })?;
        let mut out = Vec::new();
        tenants(first, &mut out).then_some(out)
    }
}

fn eval(e: &Expr, r: &Row<'_>) -> Val {
    match e {
        Expr::Field(f) => r.get(f),
        Expr::Lit(v) => v.clone(),
        Expr::Regex(x) => Val::Str(x.clone()),
        other => Val::Num(if truthy(other, r) { 1.0 } else { 0.0 }),
    }
}

fn truthy(e: &Expr, r: &Row<'_>) -> bool {
    match e {
        Expr::And(a, b) => truthy(a, r) && truthy(b, r),
        Expr::Or(a, b) => truthy(a, r) || truthy(b, r),
        Expr::Not(a) => !truthy(a, r),
        Expr::Cmp(a, op, b) => {
            let (a, b) = (eval(a, r), eval(b, r));
            match op {
                CmpOp::Eq => a.cmp(&b) == Some(Ordering::Equal),
                CmpOp::Ne => a.cmp(&b) != Some(Ordering::Equal),
                CmpOp::Lt => a.cmp(&b) == Some(Ordering::Less),
                CmpOp::Le => matches!(a.cmp(&b), Some(Ordering::Less | Ordering::Equal)),
                CmpOp::Gt => a.cmp(&b) == Some(Ordering::Greater),
                CmpOp::Ge => matches!(a.cmp(&b), Some(Ordering::Greater | Ordering::Equal)),
            }
        }
        Expr::Like(a, b) => {
            let text = eval(a, r).render();
            match &**b {
                Expr::Regex(x) => regex_lite(x, &text),
                other => text.contains(&eval(other, r).render()),
            }
        }
        Expr::Field(f) => !matches!(r.get(f), Val::Null),
        Expr::Lit(v) => !matches!(v, Val::Null),
        Expr::Regex(_) => true,
    }
}

/// A small regular-expression subset for `like /.../`: literal text with `.`, `.*`, `^`, `$`
/// and a trailing `i` flag is not supported; anything else is matched as a substring.
fn regex_lite(re: &str, text: &str) -> bool {
    let anchored_start = re.starts_with('^');
    let anchored_end = re.ends_with('$') && !re.ends_with("\\$");
    let body = re.trim_start_matches('^');
    let body = if anchored_end { &body[..body.len() - 1] } else { body };
    let parts: Vec<&str> = body.split(".*").collect();
    let simple = |p: &str| !p.contains(['[', ']', '(', ')', '+', '?', '{', '}', '|', '\\']);
    if !parts.iter().all(|p| simple(p)) {
        return text.contains(body);
    }
    // Each part may hold single-character `.` wildcards.
    fn find_at(text: &str, part: &str, from: usize) -> Option<usize> {
        let t: Vec<char> = text.chars().collect();
        let p: Vec<char> = part.chars().collect();
        (from..=t.len().saturating_sub(p.len()))
            .find(|&i| p.iter().enumerate().all(|(k, c)| *c == '.' || t.get(i + k) == Some(c)))
    }
    let n = text.chars().count();
    let mut at = 0;
    for (i, part) in parts.iter().enumerate() {
        let plen = part.chars().count();
        let Some(pos) = find_at(text, part, at) else { return false };
        if i == 0 && anchored_start && pos != 0 {
            return false;
        }
        at = pos + plen;
        if i == parts.len() - 1 && anchored_end {
            // The last part must end the text: look for its last occurrence.
            let last = (pos..=n.saturating_sub(plen)).rev().find(|&k| find_at(text, part, k) == Some(k));
            return last.is_some_and(|k| k + plen == n && (parts.len() > 1 || !anchored_start || k == 0));
        }
    }
    true
}

/// `pattern` with `*` as captures, matched against `text`.
fn parse_glob(pattern: &str, text: &str) -> Option<Vec<String>> {
    let pieces: Vec<&str> = pattern.split('*').collect();
    let mut rest =
        text.strip_prefix(pieces[0]).or_else(|| text.find(pieces[0]).map(|i| &text[i + pieces[0].len()..]))?;
    let mut caps = Vec::new();
    for (i, piece) in pieces.iter().enumerate().skip(1) {
        if piece.is_empty() && i == pieces.len() - 1 {
            caps.push(rest.to_string());
            rest = "";
            continue;
        }
        let at = rest.find(piece)?;
        caps.push(rest[..at].to_string());
        rest = &rest[at + piece.len()..];
    }
    Some(caps)
}

/// One result row: fields in order, values rendered.
pub type ResultRow = Vec<(String, String)>;

/// Run `q` over `events` (each with its log group; oldest first). Returns the result rows and
/// how many records matched.
pub fn run(q: &Query, events: &[(String, Event)]) -> (Vec<ResultRow>, usize) {
    let mut rows: Vec<Row<'_>> = events.iter().map(|(g, e)| Row::new(e, g)).collect();
    let mut fields: Option<Vec<String>> = None;
    let mut table: Option<Vec<ResultRow>> = None;
    let mut limit: Option<usize> = None;
    let mut matched = rows.len();
    for cmd in &q.commands {
        match cmd {
            Command::Parse { field, pattern, names } => {
                for r in rows.iter_mut() {
                    let text = r.get(field).render();
                    if let Some(caps) = parse_glob(pattern, &text) {
                        for (n, c) in names.iter().zip(caps) {
                            let v = c.trim().parse::<f64>().map(Val::Num).unwrap_or(Val::Str(c));
                            r.parsed.insert(n.clone(), v);
                        }
                    }
                }
            }
            Command::Filter(e) => match &mut table {
                None => {
                    rows.retain(|r| truthy(e, r));
                    matched = rows.len();
                }
                Some(t) => t.retain(|row| {
                    let ev = Event { id: 0, ts_ms: 0, log_stream: String::new(), message: String::new() };
                    let mut r = Row::new(&ev, "");
                    for (k, v) in row {
                        r.parsed.insert(k.clone(), v.parse::<f64>().map(Val::Num).unwrap_or(Val::Str(v.clone())));
                    }
                    truthy(e, &r)
                }),
            },
            Command::Fields(f) => fields = Some(f.clone()),
            Command::Stats { aggs, by } => {
                let mut groups: BTreeMap<Vec<String>, Vec<&Row<'_>>> = BTreeMap::new();
                for r in &rows {
                    groups.entry(by.iter().map(|b| r.get(b).render()).collect()).or_default().push(r);
                }
                let mut out = Vec::new();
                for (key, members) in groups {
                    let mut row: ResultRow = by.iter().cloned().zip(key).collect();
                    for (a, label) in aggs {
                        row.push((label.clone(), aggregate(a, &members)));
                    }
                    out.push(row);
                }
                table = Some(out);
            }
            Command::Sort { field, desc } => match &mut table {
                None => {
                    rows.sort_by(|a, b| {
                        let o = a.get(field).cmp(&b.get(field)).unwrap_or(Ordering::Equal);
                        if *desc { o.reverse() } else { o }
                    });
                }
                Some(t) => t.sort_by(|a, b| {
                    let get = |r: &ResultRow| {
                        r.iter()
                            .find(|(k, _)| k == field)
                            .map(|(_, v)| v.parse::<f64>().map(Val::Num).unwrap_or_else(|_| Val::Str(v.clone())))
                    };
                    let o = match (get(a), get(b)) {
                        (Some(x), Some(y)) => x.cmp(&y).unwrap_or(Ordering::Equal),
                        _ => Ordering::Equal,
                    };
                    if *desc { o.reverse() } else { o }
                }),
            },
            Command::Limit(n) => limit = Some(*n),
        }
    }
    let mut out = match table {
        Some(t) => t,
        None => {
            let f = fields.unwrap_or_else(|| vec!["@timestamp".into(), "@message".into()]);
            rows.iter().map(|r| f.iter().map(|k| (k.clone(), r.get(k).render())).collect()).collect()
        }
    };
    out.truncate(limit.unwrap_or(10_000));
    (out, matched)
}

fn aggregate(a: &Agg, rows: &[&Row<'_>]) -> String {
    let nums = |f: &str| -> Vec<f64> { rows.iter().filter_map(|r| r.get(f).num()).collect() };
    let v = match a {
        Agg::Count(None) => Some(rows.len() as f64),
        Agg::Count(Some(f)) => Some(rows.iter().filter(|r| r.get(f) != Val::Null).count() as f64),
        Agg::Sum(f) => Some(nums(f).iter().sum()),
        Agg::Avg(f) => {
            let n = nums(f);
            (!n.is_empty()).then(|| n.iter().sum::<f64>() / n.len() as f64)
        }
        Agg::Min(f) => nums(f).into_iter().reduce(f64::min),
        Agg::Max(f) => nums(f).into_iter().reduce(f64::max),
        Agg::Pct(f, p) => {
            let mut n = nums(f);
            n.sort_by(f64::total_cmp);
            crate::percentile_of(&n, *p)
        }
    };
    v.map(|x| Val::Num(x).render()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(id: i64, stream: &str, msg: &str) -> (String, Event) {
        (
            "g".to_string(),
            Event { id, ts_ms: 1_700_000_000_000 + id as u64, log_stream: stream.into(), message: msg.into() },
        )
    }

    #[test]
    fn the_tenant_queries_of_the_reference() {
        let events = vec![
            ev(1, "s1", r#"{"type":"platform.start","record":{"requestId":"r1","tenantId":"BlueTenant"}}"#),
            ev(2, "s1", r#"{"level":"INFO","message":"hi","tenantId":"BlueTenant","requestId":"r1"}"#),
            ev(3, "s2", r#"{"level":"INFO","message":"hi","tenantId":"GreenTenant","requestId":"r2"}"#),
            ev(4, "s3", r#"{"level":"INFO","message":"again","tenantId":"BlueTenant","requestId":"r3"}"#),
            ev(5, "s3", "plain text line"),
        ];
        let q = Query::parse(
            "fields @logStream, @message\n| filter tenantId=='BlueTenant' or record.tenantId=='BlueTenant'\n| stats count() as logCount by @logStream\n| sort @timestamp desc",
        )
        .expect("parse");
        assert_eq!(q.tenant_hint(), Some(vec!["BlueTenant".to_string(), "BlueTenant".to_string()]));
        let (rows, matched) = run(&q, &events);
        assert_eq!(matched, 3);
        assert_eq!(
            rows,
            vec![
                vec![("@logStream".to_string(), "s1".to_string()), ("logCount".to_string(), "2".to_string())],
                vec![("@logStream".to_string(), "s3".to_string()), ("logCount".to_string(), "1".to_string())],
            ]
        );
        let q = Query::parse(
            "fields @message | filter tenantId=='BlueTenant' or record.tenantId=='BlueTenant' | limit 1000",
        )
        .expect("parse");
        let (rows, _) = run(&q, &events);
        assert_eq!(rows.len(), 3);
        assert!(rows.iter().all(|r| r[0].0 == "@message" && r[0].1.contains("BlueTenant")));
    }

    #[test]
    fn stats_parse_sort_limit_like() {
        let events: Vec<(String, Event)> =
            (1..=10).map(|i| ev(i, "s", &format!("REPORT took {} ms for t{}", i * 10, i % 2))).collect();
        let q = Query::parse(r#"parse @message "took * ms for *" as ms, tenant | stats avg(ms) as a, max(ms), pct(ms, 90) by tenant | sort a desc"#)
            .expect("parse");
        let (rows, _) = run(&q, &events);
        assert_eq!(
            rows[0],
            vec![
                ("tenant".into(), "t0".into()),
                ("a".into(), "60".into()),
                ("max(ms)".into(), "100".into()),
                ("pct(ms, 90)".into(), "100".into()),
            ]
        );
        let q = Query::parse("filter @message like /took 1.0 ms/ | fields @message | limit 5").expect("parse");
        let (rows, matched) = run(&q, &events);
        assert_eq!((rows.len(), matched), (1, 1));
        let q = Query::parse("filter @message like 'for t1' and not @message like /^REPORT took 9/").expect("parse");
        assert_eq!(run(&q, &events).1, 4);
        assert!(Query::parse("filter (a == 1").is_err());
        assert!(Query::parse("explode x").is_err());
        assert!(Query::parse("").is_err());
    }
}
