//! The formula's grammar: a lexer and a precedence-climbing parser for the subset of expr-lang
//! (the language KEDA evaluates `scalingModifiers.formula` with) that a formula over numbers uses.
//!
//! Precedence, lowest first, as in expr-lang: `? :` (right), `||`/`or`, `&&`/`and`, comparisons,
//! `+ -`, `* / %`, unary `!`/`not` (binds looser than arithmetic: `!a == b` is `(!a) == b`),
//! unary `- +`, `**`/`^` (right), `??`.
//! Recursion is bounded by [`MAX_DEPTH`] and input by [`MAX_LEN`], so no input can exhaust the stack.

use super::FormulaError;

/// Longest formula accepted, in bytes.
pub const MAX_LEN: usize = 4096;
/// Deepest nesting accepted (parentheses, operators, calls).
pub const MAX_DEPTH: usize = 64;

/// A unary operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum UnOp {
    Neg,
    Plus,
    Not,
}

/// A binary operator (`&&`, `||` and `??` short-circuit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BinOp {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Pow,
    Coalesce,
}

impl BinOp {
    /// Precedence and whether the operator is right-associative.
    fn binding(self) -> (u16, bool) {
        match self {
            BinOp::Or => (10, false),
            BinOp::And => (15, false),
            BinOp::Eq | BinOp::Ne | BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => (20, false),
            BinOp::Add | BinOp::Sub => (30, false),
            BinOp::Mul | BinOp::Div | BinOp::Rem => (60, false),
            BinOp::Pow => (100, true),
            BinOp::Coalesce => (500, false),
        }
    }
}

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Func {
    Abs,
    Ceil,
    Floor,
    Round,
    Float,
    Int,
    Min,
    Max,
    Sum,
    Mean,
    Count,
    All,
    Any,
    None,
}

impl Func {
    fn by_name(name: &str) -> Option<Func> {
        Some(match name {
            "abs" => Func::Abs,
            "ceil" => Func::Ceil,
            "floor" => Func::Floor,
            "round" => Func::Round,
            "float" => Func::Float,
            "int" => Func::Int,
            "min" => Func::Min,
            "max" => Func::Max,
            "sum" => Func::Sum,
            "mean" => Func::Mean,
            "count" => Func::Count,
            "all" => Func::All,
            "any" => Func::Any,
            "none" => Func::None,
            _ => return None,
        })
    }

    /// Whether the second argument is a predicate over `#` (`count(list, {# > 1})`).
    pub(super) fn takes_predicate(self) -> bool {
        matches!(self, Func::Count | Func::All | Func::Any | Func::None)
    }
}

/// A parsed formula.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Node {
    Num(f64),
    Bool(bool),
    Nil,
    /// A trigger's value, by its position in the names the formula was compiled against.
    Var(usize),
    /// `#`, the element a predicate looks at.
    Element,
    Array(Vec<Node>),
    Unary(UnOp, Box<Node>),
    Binary(BinOp, Box<Node>, Box<Node>),
    Ternary(Box<Node>, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(f64),
    Ident(String),
    Op(&'static str),
}

const OPS: [&str; 25] = [
    "**", "??", "&&", "||", "==", "!=", "<=", ">=", "<", ">", "+", "-", "*", "/", "%", "^", "!", "?", ":",
    "(", ")", "[", "]", ",", "#",
];

fn lex(text: &str) -> Result<Vec<(usize, Tok)>, FormulaError> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() || (c == b'.' && bytes.get(i + 1).is_some_and(u8::is_ascii_digit)) {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                i += 1;
            }
            if bytes.get(i) == Some(&b'.') && bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
                i += 1;
                while i < bytes.len() && (bytes[i].is_ascii_digit() || bytes[i] == b'_') {
                    i += 1;
                }
            }
            if matches!(bytes.get(i), Some(b'e' | b'E')) {
                let sign = usize::from(matches!(bytes.get(i + 1), Some(b'+' | b'-')));
                if bytes.get(i + 1 + sign).is_some_and(u8::is_ascii_digit) {
                    i += 1 + sign;
                    while i < bytes.len() && bytes[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            let literal: String = text[start..i].chars().filter(|c| *c != '_').collect();
            match literal.parse::<f64>() {
                Ok(n) if n.is_finite() => out.push((start, Tok::Num(n))),
                _ => return Err(syntax(start, format!("bad number {:?}", &text[start..i]))),
            }
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b'$' {
            let start = i;
            while i < bytes.len()
                && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b'$')
            {
                i += 1;
            }
            out.push((start, Tok::Ident(text[start..i].to_string())));
        } else if c == b'{' || c == b'}' {
            // A predicate's braces are optional in expr-lang; they group like parentheses.
            out.push((i, Tok::Op(if c == b'{' { "(" } else { ")" })));
            i += 1;
        } else if let Some(op) = OPS.iter().find(|op| text[i..].starts_with(**op)) {
            out.push((i, Tok::Op(op)));
            i += op.len();
        } else {
            let ch = text[i..].chars().next().unwrap_or('?');
            return Err(syntax(i, format!("unexpected character {ch:?}")));
        }
    }
    Ok(out)
}

fn syntax(position: usize, message: String) -> FormulaError {
    FormulaError::Syntax { position, message }
}

/// Parses `text`, resolving identifiers against `names` (the triggers' names).
pub(super) fn parse(text: &str, names: &[&str]) -> Result<Node, FormulaError> {
    if text.len() > MAX_LEN {
        return Err(FormulaError::TooLong { len: text.len() });
    }
    let tokens = lex(text)?;
    let mut p = Parser {
        tokens,
        pos: 0,
        end: text.len(),
        names,
        depth: 0,
        in_predicate: false,
    };
    let node = p.expression()?;
    match p.tokens.get(p.pos) {
        None => Ok(node),
        Some((at, tok)) => Err(syntax(*at, format!("unexpected {}", describe(tok)))),
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Num(n) => format!("number {n}"),
        Tok::Ident(s) => format!("name {s:?}"),
        Tok::Op(s) => format!("{s:?}"),
    }
}

struct Parser<'a> {
    tokens: Vec<(usize, Tok)>,
    pos: usize,
    end: usize,
    names: &'a [&'a str],
    depth: usize,
    in_predicate: bool,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(_, t)| t)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |(at, _)| *at)
    }

    fn eat(&mut self, op: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Op(o)) if *o == op) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, op: &str) -> Result<(), FormulaError> {
        if self.eat(op) {
            return Ok(());
        }
        let found = self.peek().map_or("the end".to_string(), describe);
        Err(syntax(self.at(), format!("expected {op:?}, found {found}")))
    }

    fn enter(&mut self) -> Result<(), FormulaError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(FormulaError::TooDeep);
        }
        Ok(())
    }

    /// A whole expression, the ternary included.
    fn expression(&mut self) -> Result<Node, FormulaError> {
        self.enter()?;
        let cond = self.binary(0)?;
        let node = if self.eat("?") {
            let yes = self.expression()?;
            self.expect(":")?;
            let no = self.expression()?;
            Node::Ternary(Box::new(cond), Box::new(yes), Box::new(no))
        } else {
            cond
        };
        self.depth -= 1;
        Ok(node)
    }

    fn binary_op(&self) -> Option<BinOp> {
        Some(match self.peek()? {
            Tok::Op(op) => match *op {
                "||" => BinOp::Or,
                "&&" => BinOp::And,
                "==" => BinOp::Eq,
                "!=" => BinOp::Ne,
                "<" => BinOp::Lt,
                ">" => BinOp::Gt,
                "<=" => BinOp::Le,
                ">=" => BinOp::Ge,
                "+" => BinOp::Add,
                "-" => BinOp::Sub,
                "*" => BinOp::Mul,
                "/" => BinOp::Div,
                "%" => BinOp::Rem,
                "**" | "^" => BinOp::Pow,
                "??" => BinOp::Coalesce,
                _ => return None,
            },
            Tok::Ident(word) => match word.as_str() {
                "or" => BinOp::Or,
                "and" => BinOp::And,
                _ => return None,
            },
            Tok::Num(_) => return None,
        })
    }

    /// Operators binding tighter than `min` (precedence climbing).
    fn binary(&mut self, min: u16) -> Result<Node, FormulaError> {
        self.enter()?;
        let mut left = self.unary()?;
        while let Some(op) = self.binary_op() {
            let (prec, right_assoc) = op.binding();
            if prec <= min {
                break;
            }
            self.pos += 1;
            let next = if right_assoc { prec - 1 } else { prec };
            self.enter()?;
            let right = self.binary(next)?;
            self.depth -= 1;
            left = Node::Binary(op, Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn unary(&mut self) -> Result<Node, FormulaError> {
        let op = match self.peek() {
            Some(Tok::Op("-")) => Some((UnOp::Neg, 90)),
            Some(Tok::Op("+")) => Some((UnOp::Plus, 90)),
            Some(Tok::Op("!")) => Some((UnOp::Not, 50)),
            Some(Tok::Ident(w)) if w == "not" => Some((UnOp::Not, 50)),
            _ => None,
        };
        let Some((op, prec)) = op else {
            return self.primary();
        };
        self.pos += 1;
        self.enter()?;
        let operand = self.binary(prec)?;
        self.depth -= 1;
        Ok(Node::Unary(op, Box::new(operand)))
    }

    fn primary(&mut self) -> Result<Node, FormulaError> {
        let at = self.at();
        let Some((_, tok)) = self.tokens.get(self.pos).cloned() else {
            return Err(syntax(at, "unexpected end of formula".into()));
        };
        self.pos += 1;
        match tok {
            Tok::Num(n) => Ok(Node::Num(n)),
            Tok::Op("(") => {
                let node = self.expression()?;
                self.expect(")")?;
                Ok(node)
            }
            Tok::Op("[") => {
                let items = self.list("]")?;
                Ok(Node::Array(items))
            }
            Tok::Op("#") if self.in_predicate => Ok(Node::Element),
            Tok::Op("#") => Err(syntax(
                at,
                "`#` is only allowed in a predicate, e.g. count(list, {# > 1})".into(),
            )),
            Tok::Op(op) => Err(syntax(at, format!("unexpected {op:?}"))),
            Tok::Ident(word) => self.word(at, &word),
        }
    }

    fn word(&mut self, at: usize, word: &str) -> Result<Node, FormulaError> {
        match word {
            "true" => return Ok(Node::Bool(true)),
            "false" => return Ok(Node::Bool(false)),
            "nil" => return Ok(Node::Nil),
            _ => {}
        }
        if matches!(self.peek(), Some(Tok::Op("("))) {
            let Some(func) = Func::by_name(word) else {
                return Err(FormulaError::UnknownFunction {
                    name: word.to_string(),
                });
            };
            self.pos += 1;
            let args = if func.takes_predicate() {
                self.predicate_args()?
            } else {
                self.list(")")?
            };
            return Ok(Node::Call(func, args));
        }
        match self.names.iter().position(|n| *n == word) {
            Some(i) => Ok(Node::Var(i)),
            None if matches!(word, "and" | "or" | "not" | "in" | "let") => {
                Err(syntax(at, format!("unexpected {word:?}")))
            }
            None => Err(FormulaError::UnknownTrigger {
                name: word.to_string(),
                known: self.names.iter().map(|n| n.to_string()).collect(),
            }),
        }
    }

    /// Comma-separated expressions up to `close`.
    fn list(&mut self, close: &str) -> Result<Vec<Node>, FormulaError> {
        let mut items = Vec::new();
        if self.eat(close) {
            return Ok(items);
        }
        loop {
            items.push(self.expression()?);
            if self.eat(close) {
                return Ok(items);
            }
            self.expect(",")?;
        }
    }

    /// `(list, predicate)`: the predicate may use `#`.
    fn predicate_args(&mut self) -> Result<Vec<Node>, FormulaError> {
        let list = self.expression()?;
        self.expect(",")?;
        let outer = std::mem::replace(&mut self.in_predicate, true);
        let predicate = self.expression();
        self.in_predicate = outer;
        let predicate = predicate?;
        self.expect(")")?;
        Ok(vec![list, predicate])
    }
}
