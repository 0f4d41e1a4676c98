//! Kubernetes label selector strings (`labelSelector=` query parameter), parsed as
//! `k8s.io/apimachinery/pkg/labels.Parse` does.
//!
//! Grammar: comma-separated requirements, each one of `key`, `!key`, `key=value`, `key==value`,
//! `key!=value`, `key in (v1,v2)`, `key notin (v1)`, `key>n`, `key<n`. Whitespace between tokens
//! is ignored. Keys are `[prefix/]name` (prefix a DNS subdomain of at most 253 characters, name a
//! label name of at most 63); values are label values (at most 63, possibly empty).

use std::collections::BTreeMap;
use std::fmt;

/// A selector that does not parse; the message says where and what was expected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unable to parse requirement: {0}")]
pub struct SelectorError(String);

/// The operator of one requirement.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operator {
    /// `key=value` or `key==value`.
    Equals,
    /// `key!=value`.
    NotEquals,
    /// `key in (a,b)`.
    In,
    /// `key notin (a,b)`.
    NotIn,
    /// `key`.
    Exists,
    /// `!key`.
    DoesNotExist,
    /// `key>n` (integer).
    GreaterThan,
    /// `key<n` (integer).
    LessThan,
}

impl fmt::Display for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operator::Equals => "=",
            Operator::NotEquals => "!=",
            Operator::In => "in",
            Operator::NotIn => "notin",
            Operator::Exists => "exists",
            Operator::DoesNotExist => "!",
            Operator::GreaterThan => ">",
            Operator::LessThan => "<",
        })
    }
}

/// One requirement of a selector.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Requirement {
    /// The label key.
    pub key: String,
    /// The operator.
    pub operator: Operator,
    /// The values: one for `=`, `!=`, `>`, `<`; a sorted, de-duplicated non-empty set for `in`
    /// and `notin`; none for `exists` and `!`.
    pub values: Vec<String>,
}

/// A parsed label selector: all requirements must hold (logical AND).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selector {
    requirements: Vec<Requirement>,
}

impl Selector {
    /// Parses a selector string. The empty string is the empty selector (matches everything).
    pub fn parse(input: &str) -> Result<Self, SelectorError> {
        let tokens = lex(input);
        let mut parser = Parser { tokens, pos: 0 };
        let requirements = parser.parse()?;
        Ok(Self { requirements })
    }

    /// The requirements, in the order written.
    pub fn requirements(&self) -> &[Requirement] {
        &self.requirements
    }

    /// Whether there are no requirements.
    pub fn is_empty(&self) -> bool {
        self.requirements.is_empty()
    }

    /// The values the selector pins `key` to: the value of every `key=v` and of every
    /// single-valued `key in (v)`.
    pub fn pinned_values<'a>(&'a self, key: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.requirements
            .iter()
            .filter(move |r| r.key == key)
            .filter_map(Requirement::pinned_value)
    }

    /// The labels pinned by equality (`k=v`, `k==v`, `k in (v)`), as `metricLabels` echoes them.
    pub fn equality_labels(&self) -> BTreeMap<String, String> {
        self.requirements
            .iter()
            .filter_map(|r| r.pinned_value().map(|v| (r.key.clone(), v.to_owned())))
            .collect()
    }
}

impl Requirement {
    /// The single value this requirement pins its key to, if it is an equality.
    pub fn pinned_value(&self) -> Option<&str> {
        match (self.operator, self.values.as_slice()) {
            (Operator::Equals | Operator::In, [v]) => Some(v.as_str()),
            _ => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Token {
    Identifier(String),
    Bang,
    Equals,
    DoubleEquals,
    NotEquals,
    Greater,
    Less,
    OpenPar,
    ClosePar,
    Comma,
    End,
}

impl Token {
    fn literal(&self) -> &str {
        match self {
            Token::Identifier(s) => s,
            Token::Bang => "!",
            Token::Equals => "=",
            Token::DoubleEquals => "==",
            Token::NotEquals => "!=",
            Token::Greater => ">",
            Token::Less => "<",
            Token::OpenPar => "(",
            Token::ClosePar => ")",
            Token::Comma => ",",
            Token::End => "end of string",
        }
    }
}

fn is_special(c: char) -> bool {
    matches!(c, '!' | '=' | '(' | ')' | ',' | '>' | '<')
}

fn lex(input: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = input.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        chars.next();
        let next_is_eq = matches!(chars.peek(), Some(&(_, '=')));
        let token = match c {
            '!' if next_is_eq => {
                chars.next();
                Token::NotEquals
            }
            '!' => Token::Bang,
            '=' if next_is_eq => {
                chars.next();
                Token::DoubleEquals
            }
            '=' => Token::Equals,
            '>' => Token::Greater,
            '<' => Token::Less,
            '(' => Token::OpenPar,
            ')' => Token::ClosePar,
            ',' => Token::Comma,
            _ => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, c)) = chars.peek() {
                    if c.is_whitespace() || is_special(c) {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                Token::Identifier(input[start..end].to_owned())
            }
        };
        tokens.push(token);
    }
    tokens.push(Token::End);
    tokens
}

struct Parser {
    tokens: Vec<Token>,
    pos: usize,
}

fn err(found: &Token, expected: &str) -> SelectorError {
    SelectorError(format!("found '{}', expected: {expected}", found.literal()))
}

impl Parser {
    fn peek(&self) -> &Token {
        self.tokens.get(self.pos).unwrap_or(&Token::End)
    }

    fn next(&mut self) -> Token {
        let token = self.tokens.get(self.pos).cloned().unwrap_or(Token::End);
        if self.pos < self.tokens.len() {
            self.pos += 1;
        }
        token
    }

    fn parse(&mut self) -> Result<Vec<Requirement>, SelectorError> {
        let mut requirements = Vec::new();
        loop {
            match self.peek() {
                Token::Identifier(_) | Token::Bang => {
                    requirements.push(self.parse_requirement()?);
                    match self.next() {
                        Token::End => return Ok(requirements),
                        Token::Comma => match self.peek() {
                            Token::Identifier(_) | Token::Bang => {}
                            other => return Err(err(other, "identifier after ','")),
                        },
                        other => return Err(err(&other, "',' or 'end of string'")),
                    }
                }
                Token::End => return Ok(requirements),
                other => return Err(err(other, "!, identifier, or 'end of string'")),
            }
        }
    }

    fn parse_requirement(&mut self) -> Result<Requirement, SelectorError> {
        let mut token = self.next();
        let negated = token == Token::Bang;
        if negated {
            token = self.next();
        }
        let Token::Identifier(key) = token else {
            return Err(err(&token, "identifier"));
        };
        validate_key(&key)?;
        let at_end = matches!(self.peek(), Token::End | Token::Comma);
        if negated {
            if !at_end {
                return Err(err(self.peek(), "',' or 'end of string'"));
            }
            return Ok(Requirement {
                key,
                operator: Operator::DoesNotExist,
                values: Vec::new(),
            });
        }
        if at_end {
            return Ok(Requirement {
                key,
                operator: Operator::Exists,
                values: Vec::new(),
            });
        }
        let token = self.next();
        let operator = match &token {
            Token::Identifier(s) if s == "in" => Operator::In,
            Token::Identifier(s) if s == "notin" => Operator::NotIn,
            Token::Equals | Token::DoubleEquals => Operator::Equals,
            Token::NotEquals => Operator::NotEquals,
            Token::Greater => Operator::GreaterThan,
            Token::Less => Operator::LessThan,
            other => return Err(err(other, "=, !=, ==, in, notin, >, <")),
        };
        let values = match operator {
            Operator::In | Operator::NotIn => self.parse_value_set()?,
            _ => vec![self.parse_exact_value()?],
        };
        match operator {
            Operator::In | Operator::NotIn if values.is_empty() => {
                return Err(SelectorError(format!(
                    "key {key}: for 'in', 'notin' operators, values set can't be empty"
                )));
            }
            Operator::GreaterThan | Operator::LessThan => {
                for v in &values {
                    if v.parse::<i64>().is_err() {
                        return Err(SelectorError(format!(
                            "key {key}: for 'Gt', 'Lt' operators, the value must be an integer, not '{v}'"
                        )));
                    }
                }
            }
            _ => {
                for v in &values {
                    validate_value(&key, v)?;
                }
            }
        }
        Ok(Requirement {
            key,
            operator,
            values,
        })
    }

    fn parse_exact_value(&mut self) -> Result<String, SelectorError> {
        if matches!(self.peek(), Token::End | Token::Comma) {
            return Ok(String::new());
        }
        match self.next() {
            Token::Identifier(v) => Ok(v),
            other => Err(err(&other, "identifier")),
        }
    }

    fn parse_value_set(&mut self) -> Result<Vec<String>, SelectorError> {
        let token = self.next();
        if token != Token::OpenPar {
            return Err(err(&token, "'('"));
        }
        let mut values = Vec::new();
        match self.peek() {
            Token::ClosePar => {
                self.next();
                return Ok(values);
            }
            Token::Identifier(_) | Token::Comma => {}
            other => return Err(err(other, "',', ')' or identifier")),
        }
        // Mirrors apimachinery's parseIdentifiersList, including empty values around commas.
        loop {
            match self.next() {
                Token::Identifier(v) => {
                    values.push(v);
                    match self.next() {
                        Token::Comma => continue,
                        Token::ClosePar => break,
                        other => return Err(err(&other, "',' or ')'")),
                    }
                }
                Token::Comma => {
                    values.push(String::new());
                    match self.peek() {
                        Token::ClosePar => {
                            self.next();
                            break;
                        }
                        Token::Comma | Token::Identifier(_) => {}
                        other => return Err(err(other, "',', ')' or identifier")),
                    }
                }
                other => return Err(err(&other, "',', or identifier")),
            }
        }
        values.sort();
        values.dedup();
        Ok(values)
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')
}

/// A label name or non-empty label value: at most 63 characters, alphanumerics, `-`, `_`, `.`,
/// starting and ending with an alphanumeric.
fn is_qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars().all(is_name_char)
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

fn validate_key(key: &str) -> Result<(), SelectorError> {
    let valid = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_qualified_name_part(name),
        None => is_qualified_name_part(key),
    };
    if valid {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label key '{key}': must be [prefix/]name, name at most 63 characters of \
             [A-Za-z0-9_.-] starting and ending with an alphanumeric, prefix a DNS subdomain"
        )))
    }
}

fn validate_value(key: &str, value: &str) -> Result<(), SelectorError> {
    if value.is_empty() || is_qualified_name_part(value) {
        Ok(())
    } else {
        Err(SelectorError(format!(
            "invalid label value '{value}' for key {key}: at most 63 characters of [A-Za-z0-9_.-] \
             starting and ending with an alphanumeric"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.to_owned(),
            operator,
            values: values.iter().map(|v| (*v).to_owned()).collect(),
        }
    }

    #[test]
    fn parses_every_form() {
        let s = Selector::parse(
            "a=b, c==d,e!=f,g in (y, x,x), h notin (z), i, !j, scaledobject.ebb.dev/name=orders,k>3,l<-2",
        )
        .expect("parses");
        assert_eq!(
            s.requirements(),
            &[
                req("a", Operator::Equals, &["b"]),
                req("c", Operator::Equals, &["d"]),
                req("e", Operator::NotEquals, &["f"]),
                req("g", Operator::In, &["x", "y"]),
                req("h", Operator::NotIn, &["z"]),
                req("i", Operator::Exists, &[]),
                req("j", Operator::DoesNotExist, &[]),
                req("scaledobject.ebb.dev/name", Operator::Equals, &["orders"]),
                req("k", Operator::GreaterThan, &["3"]),
                req("l", Operator::LessThan, &["-2"]),
            ]
        );
        let labels = s.equality_labels();
        assert_eq!(labels.get("a").map(String::as_str), Some("b"));
        assert_eq!(labels.get("c").map(String::as_str), Some("d"));
        assert_eq!(
            labels.get("scaledobject.ebb.dev/name").map(String::as_str),
            Some("orders")
        );
        assert!(!labels.contains_key("g"));
        assert_eq!(
            s.pinned_values("scaledobject.ebb.dev/name").collect::<Vec<_>>(),
            vec!["orders"]
        );
    }

    #[test]
    fn empty_values_and_empty_selector() {
        assert!(Selector::parse("").expect("empty").is_empty());
        assert!(Selector::parse("   ").expect("blank").is_empty());
        assert_eq!(
            Selector::parse("a=").expect("a=").requirements(),
            &[req("a", Operator::Equals, &[""])]
        );
        assert_eq!(
            Selector::parse("a in (,x)").expect("in").requirements(),
            &[req("a", Operator::In, &["", "x"])]
        );
        assert_eq!(
            Selector::parse("in=notin")
                .expect("keywords as names")
                .requirements()
                .len(),
            1
        );
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "=",
            "a=b,",
            ",a",
            "a b",
            "a in x",
            "a in ()",
            "a in (x",
            "a notin",
            "!a=b",
            "a=(b)",
            "a>b",
            "a==b==c",
            "-a=b",
            "a=b c",
            "Foo.example/a=b",
            "a=b/c",
            "a=-b",
            "a,,b",
            "!",
            "a=😀",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad:?} should not parse");
        }
        let long = "a".repeat(64);
        assert!(Selector::parse(&long).is_err());
        assert!(Selector::parse(&format!("a={long}")).is_err());
    }

    #[test]
    fn error_messages_name_the_token() {
        let e = Selector::parse("a in x").expect_err("malformed");
        assert_eq!(
            e.to_string(),
            "unable to parse requirement: found 'x', expected: '('"
        );
    }
}
