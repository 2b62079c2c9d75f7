//! The expressions of `transform` nodes: `filter` predicates and `add` columns.
//!
//! ```text
//! status == 'open' and (amount >= 100 or customer.vip)
//! not deleted and email is not null
//! concat(lower(first_name), ' ', lower(last_name))
//! ```
//!
//! Columns are names (`amount`), dotted paths into nested records (`customer.vip`) or
//! backquoted (`` `unit price` ``). Literals: `'text'` or `"text"`, numbers, `true`,
//! `false`, `null`. Operators: `==`, `!=`, `<`, `<=`, `>`, `>=`, `and`, `or`, `not`,
//! `is null`, `is not null`. Functions: `lower`, `upper`, `trim`, `length`, `concat`,
//! `coalesce`, `now`.

use crate::values::ValueError;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Expr {
    /// A constant.
    Literal(Literal),
    /// A column, as its path (`["customer", "vip"]`).
    Column(Vec<String>),
    /// `not e`.
    Not(Box<Expr>),
    /// `a and b`.
    And(Box<Expr>, Box<Expr>),
    /// `a or b`.
    Or(Box<Expr>, Box<Expr>),
    /// `a <op> b`.
    Compare(CmpOp, Box<Expr>, Box<Expr>),
    /// `e is null` (or `is not null` when `negated`).
    IsNull {
        /// The tested expression.
        expr: Box<Expr>,
        /// `is not null`.
        negated: bool,
    },
    /// `f(args)`.
    Call(Func, Vec<Expr>),
}

/// A constant.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Literal {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Number(f64),
    /// Text.
    String(String),
}

/// A comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A function.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Func {
    /// `lower(text)`
    Lower,
    /// `upper(text)`
    Upper,
    /// `trim(text)`
    Trim,
    /// `length(text)`
    Length,
    /// `concat(a, b, ...)`
    Concat,
    /// `coalesce(a, b, ...)`: the first that is not null.
    Coalesce,
    /// `now()`: the run's start time.
    Now,
}

const FUNCS: [(&str, Func, usize, Option<usize>); 7] = [
    ("lower", Func::Lower, 1, Some(1)),
    ("upper", Func::Upper, 1, Some(1)),
    ("trim", Func::Trim, 1, Some(1)),
    ("length", Func::Length, 1, Some(1)),
    ("concat", Func::Concat, 1, None),
    ("coalesce", Func::Coalesce, 1, None),
    ("now", Func::Now, 0, Some(0)),
];

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Quoted(String),
    Str(String),
    Num(f64),
    Op(&'static str),
    LParen,
    RParen,
    Comma,
}

const HELP: &str = "expressions compare columns and constants: `status == 'open' and amount > 10`; see the transform section of the reference";

fn lex(text: &str) -> Result<Vec<(Tok, usize)>, ValueError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |m: String, at: usize| {
        Err(ValueError {
            message: m,
            help: HELP.to_owned(),
            offset: Some(at),
        })
    };
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_alphabetic() || c == '_' {
            while i < chars.len()
                && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == '.')
            {
                i += 1;
            }
            out.push((Tok::Ident(chars[start..i].iter().collect()), start));
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let s: String = chars[start..i].iter().collect();
            match s.parse() {
                Ok(n) => out.push((Tok::Num(n), start)),
                Err(_) => return err(format!("invalid number `{s}`"), start),
            }
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            i += 1;
            let mut s = String::new();
            loop {
                match chars.get(i) {
                    None => return err(format!("`{c}` is not closed"), start),
                    Some('\\') if chars.get(i + 1).is_some() => {
                        s.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(q) if *q == c => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        s.push(*other);
                        i += 1;
                    }
                }
            }
            out.push((
                if c == '`' {
                    Tok::Quoted(s)
                } else {
                    Tok::Str(s)
                },
                start,
            ));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let op = match two.as_str() {
            "==" => Some("=="),
            "!=" | "<>" => Some("!="),
            "<=" => Some("<="),
            ">=" => Some(">="),
            "&&" => Some("and"),
            "||" => Some("or"),
            _ => None,
        };
        if let Some(op) = op {
            out.push((Tok::Op(op), start));
            i += 2;
            continue;
        }
        let tok = match c {
            '<' => Tok::Op("<"),
            '>' => Tok::Op(">"),
            '!' => Tok::Op("not"),
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            ',' => Tok::Comma,
            '=' => {
                return err("`=` is not a comparison".to_owned(), start).map_err(
                    |e: ValueError| ValueError {
                        help: "compare with `==`".to_owned(),
                        ..e
                    },
                );
            }
            other => return err(format!("unexpected `{other}`"), start),
        };
        out.push((tok, start));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    i: usize,
    end: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.i).map(|(t, _)| t)
    }

    fn offset(&self) -> usize {
        self.toks.get(self.i).map(|(_, o)| *o).unwrap_or(self.end)
    }

    fn err<T>(&self, message: impl Into<String>) -> Result<T, ValueError> {
        Err(ValueError {
            message: message.into(),
            help: HELP.to_owned(),
            offset: Some(self.offset()),
        })
    }

    fn keyword(&self, word: &str) -> bool {
        match self.peek() {
            Some(Tok::Ident(w)) => w.eq_ignore_ascii_case(word),
            Some(Tok::Op(op)) => *op == word,
            _ => false,
        }
    }

    fn or(&mut self) -> Result<Expr, ValueError> {
        let mut left = self.and()?;
        while self.keyword("or") {
            self.i += 1;
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, ValueError> {
        let mut left = self.not()?;
        while self.keyword("and") {
            self.i += 1;
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, ValueError> {
        if self.keyword("not") {
            self.i += 1;
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.comparison()
    }

    fn comparison(&mut self) -> Result<Expr, ValueError> {
        let left = self.atom()?;
        if self.keyword("is") {
            self.i += 1;
            let negated = self.keyword("not");
            if negated {
                self.i += 1;
            }
            if !self.keyword("null") {
                return self.err("expected `null` after `is`");
            }
            self.i += 1;
            return Ok(Expr::IsNull {
                expr: Box::new(left),
                negated,
            });
        }
        let op = match self.peek() {
            Some(Tok::Op("==")) => CmpOp::Eq,
            Some(Tok::Op("!=")) => CmpOp::Ne,
            Some(Tok::Op("<")) => CmpOp::Lt,
            Some(Tok::Op("<=")) => CmpOp::Le,
            Some(Tok::Op(">")) => CmpOp::Gt,
            Some(Tok::Op(">=")) => CmpOp::Ge,
            _ => return Ok(left),
        };
        self.i += 1;
        let right = self.atom()?;
        Ok(Expr::Compare(op, Box::new(left), Box::new(right)))
    }

    fn atom(&mut self) -> Result<Expr, ValueError> {
        let Some((tok, offset)) = self.toks.get(self.i).cloned() else {
            return self.err("the expression ends too early");
        };
        self.i += 1;
        match tok {
            Tok::Num(n) => Ok(Expr::Literal(Literal::Number(n))),
            Tok::Str(s) => Ok(Expr::Literal(Literal::String(s))),
            Tok::Quoted(name) => Ok(Expr::Column(vec![name])),
            Tok::LParen => {
                let e = self.or()?;
                if self.peek() != Some(&Tok::RParen) {
                    return self.err("expected `)`");
                }
                self.i += 1;
                Ok(e)
            }
            Tok::Ident(word) => {
                match word.to_ascii_lowercase().as_str() {
                    "true" => return Ok(Expr::Literal(Literal::Bool(true))),
                    "false" => return Ok(Expr::Literal(Literal::Bool(false))),
                    "null" => return Ok(Expr::Literal(Literal::Null)),
                    "and" | "or" | "not" | "is" => {
                        self.i -= 1;
                        return self.err(format!("expected a value, found `{word}`"));
                    }
                    _ => {}
                }
                if self.peek() == Some(&Tok::LParen) {
                    return self.call(&word, offset);
                }
                let path: Vec<String> = word.split('.').map(str::to_owned).collect();
                if path.iter().any(String::is_empty) {
                    self.i -= 1;
                    return self.err(format!("`{word}` is not a column path"));
                }
                Ok(Expr::Column(path))
            }
            Tok::Op(op) => {
                self.i -= 1;
                self.err(format!("expected a value, found `{op}`"))
            }
            Tok::RParen | Tok::Comma => {
                self.i -= 1;
                self.err("expected a value")
            }
        }
    }

    fn call(&mut self, name: &str, offset: usize) -> Result<Expr, ValueError> {
        let Some((_, func, min, max)) = FUNCS.iter().find(|(n, ..)| n.eq_ignore_ascii_case(name))
        else {
            let names: Vec<&str> = FUNCS.iter().map(|(n, ..)| *n).collect();
            let help = match crate::diag::suggest(name, names.iter().copied()) {
                Some(near) => format!(
                    "did you mean `{near}`? The functions are {}",
                    names.join(", ")
                ),
                None => format!("the functions are {}", names.join(", ")),
            };
            return Err(ValueError {
                message: format!("unknown function `{name}`"),
                help,
                offset: Some(offset),
            });
        };
        self.i += 1; // (
        let mut args = Vec::new();
        if self.peek() == Some(&Tok::RParen) {
            self.i += 1;
        } else {
            loop {
                args.push(self.or()?);
                match self.peek() {
                    Some(Tok::Comma) => self.i += 1,
                    Some(Tok::RParen) => {
                        self.i += 1;
                        break;
                    }
                    _ => return self.err("expected `,` or `)`"),
                }
            }
        }
        if args.len() < *min || max.is_some_and(|m| args.len() > m) {
            let wanted = match (min, max) {
                (a, Some(b)) if a == b => format!("{a}"),
                (a, _) => format!("at least {a}"),
            };
            return Err(ValueError {
                message: format!("`{name}` takes {wanted} argument(s), found {}", args.len()),
                help: HELP.to_owned(),
                offset: Some(offset),
            });
        }
        Ok(Expr::Call(*func, args))
    }
}

/// An expression as written, with its parse.
#[derive(Debug, Clone, PartialEq)]
pub struct Expression {
    written: String,
    expr: Expr,
}

impl Expression {
    /// The parsed expression.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether it yields true/false, as a filter must.
    pub fn is_predicate(&self) -> bool {
        matches!(
            self.expr,
            Expr::Not(_)
                | Expr::And(..)
                | Expr::Or(..)
                | Expr::Compare(..)
                | Expr::IsNull { .. }
                | Expr::Column(_)
                | Expr::Literal(Literal::Bool(_))
        )
    }
}

impl FromStr for Expression {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, ValueError> {
        let toks = lex(text)?;
        if toks.is_empty() {
            return Err(ValueError {
                message: "the expression is empty".to_owned(),
                help: HELP.to_owned(),
                offset: None,
            });
        }
        let mut p = Parser {
            toks,
            i: 0,
            end: text.chars().count(),
        };
        let expr = p.or()?;
        if p.i < p.toks.len() {
            return p.err("unexpected text after the expression");
        }
        Ok(Expression {
            written: text.to_owned(),
            expr,
        })
    }
}

impl fmt::Display for Expression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

impl<'de> Deserialize<'de> for Expression {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse::<Expression>().map_err(|e| match e.offset {
            Some(o) => crate::de::error_at_offset(e.message, e.help, o),
            None => crate::de::error_with_help(e.message, e.help),
        })
    }
}

impl Serialize for Expression {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl JsonSchema for Expression {
    fn schema_name() -> Cow<'static, str> {
        Cow::Borrowed("Expression")
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "format": "expression"})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Expr, ValueError> {
        s.parse::<Expression>().map(|e| e.expr)
    }

    #[test]
    fn parses_precedence_and_nesting() {
        let e = parse("status == 'open' and (amount >= 100 or customer.vip)").unwrap();
        let Expr::And(left, right) = e else {
            panic!("{e:?}")
        };
        assert_eq!(
            *left,
            Expr::Compare(
                CmpOp::Eq,
                Box::new(Expr::Column(vec!["status".into()])),
                Box::new(Expr::Literal(Literal::String("open".into())))
            )
        );
        assert!(matches!(*right, Expr::Or(..)));
        assert!(matches!(
            parse("not deleted && email is not null").unwrap(),
            Expr::And(..)
        ));
        assert!(
            matches!(parse("concat(lower(a), ' ', `unit price`)").unwrap(), Expr::Call(Func::Concat, args) if args.len() == 3)
        );
        assert!(matches!(parse("now()").unwrap(), Expr::Call(Func::Now, _)));
    }

    #[test]
    fn errors_point_at_the_character() {
        let e = parse("amount = 5").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.offset),
            ("`=` is not a comparison", Some(7))
        );
        let e = parse("amount > ").unwrap_err();
        assert_eq!(e.offset, Some(9));
        let e = parse("lowr(name)").unwrap_err();
        assert!(e.help.contains("`lower`"), "{e:?}");
        let e = parse("a == 'x").unwrap_err();
        assert_eq!(e.offset, Some(5));
        let e = parse("a b").unwrap_err();
        assert_eq!(e.offset, Some(2));
        assert!(parse("upper(a, b)").is_err());
        assert!(parse("(a").is_err());
        assert!(parse("").is_err());
        assert!(parse("a is 5").is_err());
        assert!(parse("a..b").is_err());
    }

    #[test]
    fn predicates() {
        assert!("a > 1".parse::<Expression>().unwrap().is_predicate());
        assert!(!"upper(a)".parse::<Expression>().unwrap().is_predicate());
        assert!(!"'x'".parse::<Expression>().unwrap().is_predicate());
    }
}
