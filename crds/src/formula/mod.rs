//! `advanced.scalingModifiers.formula`: compiled once per spec, evaluated once per poll.
//!
//! KEDA evaluates the formula with expr-lang; ebb accepts the part of that language a formula
//! over numbers uses: numbers, `true`/`false`/`nil`, the triggers' names, `+ - * / % **`/`^`,
//! comparisons, `&&`/`and`, `||`/`or`, `!`/`not`, `cond ? a : b`, `a ?? b` (the value of `a` unless
//! it is nil: a trigger substituted by `fallback.behavior: scalingModifiers`), lists `[a, b]` and the
//! functions `abs ceil floor round float int min max sum mean` and `count all any none` (with a
//! predicate over `#`: `count([a, b], {# > 1})`). Every value is a 64-bit float, as KEDA's trigger
//! values are, and `/` always divides as floats.
//!
//! Where expr-lang yields `±Inf` or `NaN` (a division by zero), ebb reports an error: the composite
//! metric is then unknown, like a failing trigger, never a number the HPA would act on.

mod parse;

use parse::{BinOp, Func, Node, UnOp};
pub use parse::{MAX_DEPTH, MAX_LEN};

/// Why a formula does not compile.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FormulaError {
    /// Not a formula.
    #[error("syntax error at character {}: {message}", position + 1)]
    Syntax {
        /// Byte offset of the problem (shown counting from 1).
        position: usize,
        /// What is wrong there.
        message: String,
    },
    /// A name that is no trigger's `name`.
    #[error("{name:?} is not the name of a trigger (triggers: {})", list(known))]
    UnknownTrigger {
        /// The name used.
        name: String,
        /// The triggers' names.
        known: Vec<String>,
    },
    /// A function ebb does not provide.
    #[error(
        "unknown function {name:?} (available: abs, ceil, floor, round, float, int, min, max, sum, mean, count, all, any, none)"
    )]
    UnknownFunction {
        /// The name called.
        name: String,
    },
    /// Operands or a result of the wrong type, e.g. `a && b` on numbers.
    #[error("type error: {0}")]
    Type(String),
    /// Longer than [`MAX_LEN`].
    #[error("the formula is {len} bytes long, over the limit of {MAX_LEN}")]
    TooLong {
        /// Its length.
        len: usize,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("the formula nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "none named".to_string()
    } else {
        names.join(", ")
    }
}

/// Why an evaluation gave no number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    /// A division (or remainder) by zero.
    #[error("division by zero")]
    DivisionByZero,
    /// A result that is infinite or not a number.
    #[error("the result is not a finite number")]
    NotFinite,
    /// An operand of the wrong type at run time, e.g. a nil trigger value in arithmetic.
    #[error("{0}")]
    Type(String),
    /// `min`, `max` or `mean` of an empty list.
    #[error("{0} of an empty list")]
    Empty(&'static str),
}

/// A formula compiled against a fixed list of trigger names.
#[derive(Debug, Clone, PartialEq)]
pub struct Formula {
    root: Node,
}

/// What a formula may yield: a number, or nil (`a ?? nil`) which KEDA reads as "use the fallback".
pub type Outcome = Option<f64>;

impl Formula {
    /// Parses and type-checks `text`; `names[i]` is the name bound to the `i`-th value given to
    /// [`Formula::evaluate`].
    pub fn compile(text: &str, names: &[&str]) -> Result<Formula, FormulaError> {
        let root = parse::parse(text, names)?;
        match check(&root)? {
            Type::Bool => Err(FormulaError::Type(
                "the formula yields a boolean, not a number".into(),
            )),
            Type::Array => Err(FormulaError::Type(
                "the formula yields a list, not a number".into(),
            )),
            _ => Ok(Formula { root }),
        }
    }

    /// Evaluates with `values[i]` bound to the `i`-th name (`None` is nil: a trigger whose value is
    /// replaced by the fallback). `Ok(None)` is a nil result.
    pub fn evaluate(&self, values: &[Option<f64>]) -> Result<Outcome, EvalError> {
        let env = Env {
            values,
            element: None,
        };
        match eval(&self.root, &env)? {
            Value::Nil => Ok(None),
            Value::Num(n) if n.is_finite() => Ok(Some(n)),
            Value::Num(_) => Err(EvalError::NotFinite),
            other => Err(EvalError::Type(format!(
                "the formula yields {}, not a number",
                other.kind()
            ))),
        }
    }
}

/// The name each trigger's value is bound to in a formula, in trigger order: its `name`, or `""`
/// (which no identifier matches) for a trigger without one.
pub fn binding_names(triggers: &[crate::Trigger]) -> Vec<&str> {
    triggers.iter().map(|t| t.name.as_deref().unwrap_or("")).collect()
}

/// The compiled `advanced.scalingModifiers.formula` of `spec`, when it has one.
pub fn compile_spec(spec: &crate::ScaledObjectSpec) -> Option<Result<Formula, FormulaError>> {
    let modifiers = spec.advanced.as_ref()?.scaling_modifiers.as_ref()?;
    Some(Formula::compile(
        &modifiers.formula,
        &binding_names(&spec.triggers),
    ))
}

/// A static type, for the checks made at compile time (KEDA's expr-lang compiles with types too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Type {
    Num,
    Bool,
    Nil,
    Array,
    /// Known only at run time (a ternary or `??` whose sides differ).
    Any,
}

fn expect(t: Type, want: Type, what: &str) -> Result<(), FormulaError> {
    if t == want || t == Type::Any {
        Ok(())
    } else {
        Err(FormulaError::Type(
            format!("{what} needs a {want:?}, got a {t:?}").to_lowercase(),
        ))
    }
}

fn check(node: &Node) -> Result<Type, FormulaError> {
    Ok(match node {
        Node::Num(_) | Node::Var(_) | Node::Element => Type::Num,
        Node::Bool(_) => Type::Bool,
        Node::Nil => Type::Nil,
        Node::Array(items) => {
            for item in items {
                check(item)?;
            }
            Type::Array
        }
        Node::Unary(UnOp::Not, x) => {
            expect(check(x)?, Type::Bool, "`!`")?;
            Type::Bool
        }
        Node::Unary(_, x) => {
            expect(check(x)?, Type::Num, "a sign")?;
            Type::Num
        }
        Node::Binary(op, l, r) => {
            let (l, r) = (check(l)?, check(r)?);
            match op {
                BinOp::Coalesce if l == Type::Nil => r,
                BinOp::Coalesce if l == r => l,
                BinOp::Coalesce => Type::Any,
                BinOp::Eq | BinOp::Ne => Type::Bool,
                BinOp::And | BinOp::Or => {
                    expect(l, Type::Bool, "`&&`/`||`")?;
                    expect(r, Type::Bool, "`&&`/`||`")?;
                    Type::Bool
                }
                BinOp::Lt | BinOp::Gt | BinOp::Le | BinOp::Ge => {
                    expect(l, Type::Num, "a comparison")?;
                    expect(r, Type::Num, "a comparison")?;
                    Type::Bool
                }
                _ => {
                    expect(l, Type::Num, "arithmetic")?;
                    expect(r, Type::Num, "arithmetic")?;
                    Type::Num
                }
            }
        }
        Node::Ternary(c, yes, no) => {
            expect(check(c)?, Type::Bool, "the condition of `? :`")?;
            let (yes, no) = (check(yes)?, check(no)?);
            if yes == no { yes } else { Type::Any }
        }
        Node::Call(func, args) => check_call(*func, args)?,
    })
}

fn check_call(func: Func, args: &[Node]) -> Result<Type, FormulaError> {
    let name = format!("{func:?}").to_lowercase();
    let types = args.iter().map(check).collect::<Result<Vec<_>, _>>()?;
    let arity = |n: usize| {
        if types.len() == n {
            Ok(())
        } else {
            Err(FormulaError::Type(format!(
                "{name}() takes {n} argument(s), got {}",
                types.len()
            )))
        }
    };
    match func {
        Func::Abs | Func::Ceil | Func::Floor | Func::Round | Func::Float | Func::Int => {
            arity(1)?;
            expect(types[0], Type::Num, &format!("{name}()"))?;
            Ok(Type::Num)
        }
        Func::Min | Func::Max => match types.as_slice() {
            [] => Err(FormulaError::Type(format!("{name}() needs arguments"))),
            [Type::Array] => Ok(Type::Num),
            many => {
                for t in many {
                    expect(*t, Type::Num, &format!("{name}()"))?;
                }
                Ok(Type::Num)
            }
        },
        Func::Sum | Func::Mean => {
            arity(1)?;
            expect(types[0], Type::Array, &format!("{name}()"))?;
            Ok(Type::Num)
        }
        Func::Count | Func::All | Func::Any | Func::None => {
            arity(2)?;
            expect(types[0], Type::Array, &format!("{name}()"))?;
            expect(types[1], Type::Bool, &format!("the predicate of {name}()"))?;
            Ok(if func == Func::Count {
                Type::Num
            } else {
                Type::Bool
            })
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Value {
    Nil,
    Num(f64),
    Bool(bool),
    Array(Vec<Value>),
}

impl Value {
    fn kind(&self) -> &'static str {
        match self {
            Value::Nil => "nil",
            Value::Num(_) => "a number",
            Value::Bool(_) => "a boolean",
            Value::Array(_) => "a list",
        }
    }
}

struct Env<'a> {
    values: &'a [Option<f64>],
    element: Option<&'a Value>,
}

fn num(v: Value, what: &str) -> Result<f64, EvalError> {
    match v {
        Value::Num(n) => Ok(n),
        other => Err(EvalError::Type(format!(
            "{what} needs a number, got {}",
            other.kind()
        ))),
    }
}

fn boolean(v: Value, what: &str) -> Result<bool, EvalError> {
    match v {
        Value::Bool(b) => Ok(b),
        other => Err(EvalError::Type(format!(
            "{what} needs a boolean, got {}",
            other.kind()
        ))),
    }
}

fn finite(n: f64) -> Result<Value, EvalError> {
    if n.is_finite() {
        Ok(Value::Num(n))
    } else {
        Err(EvalError::NotFinite)
    }
}

fn eval(node: &Node, env: &Env<'_>) -> Result<Value, EvalError> {
    match node {
        Node::Num(n) => Ok(Value::Num(*n)),
        Node::Bool(b) => Ok(Value::Bool(*b)),
        Node::Nil => Ok(Value::Nil),
        Node::Var(i) => Ok(match env.values.get(*i).copied().flatten() {
            Some(n) if n.is_finite() => Value::Num(n),
            Some(_) => return Err(EvalError::NotFinite),
            None => Value::Nil,
        }),
        Node::Element => Ok(env.element.cloned().unwrap_or(Value::Nil)),
        Node::Array(items) => Ok(Value::Array(
            items.iter().map(|i| eval(i, env)).collect::<Result<_, _>>()?,
        )),
        Node::Unary(op, x) => {
            let v = eval(x, env)?;
            match op {
                UnOp::Not => Ok(Value::Bool(!boolean(v, "`!`")?)),
                UnOp::Neg => Ok(Value::Num(-num(v, "`-`")?)),
                UnOp::Plus => Ok(Value::Num(num(v, "`+`")?)),
            }
        }
        Node::Binary(op, l, r) => binary(*op, l, r, env),
        Node::Ternary(c, yes, no) => {
            if boolean(eval(c, env)?, "the condition of `? :`")? {
                eval(yes, env)
            } else {
                eval(no, env)
            }
        }
        Node::Call(func, args) => call(*func, args, env),
    }
}

fn binary(op: BinOp, l: &Node, r: &Node, env: &Env<'_>) -> Result<Value, EvalError> {
    let left = eval(l, env)?;
    match op {
        BinOp::Coalesce => {
            return if left == Value::Nil {
                eval(r, env)
            } else {
                Ok(left)
            };
        }
        BinOp::And if !boolean(left.clone(), "`&&`")? => return Ok(Value::Bool(false)),
        BinOp::Or if boolean(left.clone(), "`||`")? => return Ok(Value::Bool(true)),
        BinOp::And | BinOp::Or => return Ok(Value::Bool(boolean(eval(r, env)?, "`&&`/`||`")?)),
        _ => {}
    }
    let right = eval(r, env)?;
    match op {
        BinOp::Eq => return Ok(Value::Bool(left == right)),
        BinOp::Ne => return Ok(Value::Bool(left != right)),
        _ => {}
    }
    let what = "arithmetic or a comparison";
    arithmetic(op, num(left, what)?, num(right, what)?)
}

fn arithmetic(op: BinOp, a: f64, b: f64) -> Result<Value, EvalError> {
    match op {
        BinOp::Lt => Ok(Value::Bool(a < b)),
        BinOp::Gt => Ok(Value::Bool(a > b)),
        BinOp::Le => Ok(Value::Bool(a <= b)),
        BinOp::Ge => Ok(Value::Bool(a >= b)),
        BinOp::Add => finite(a + b),
        BinOp::Sub => finite(a - b),
        BinOp::Mul => finite(a * b),
        BinOp::Div | BinOp::Rem if b == 0.0 => Err(EvalError::DivisionByZero),
        BinOp::Div => finite(a / b),
        BinOp::Rem => finite(a % b),
        BinOp::Pow => finite(a.powf(b)),
        BinOp::Coalesce | BinOp::And | BinOp::Or | BinOp::Eq | BinOp::Ne => {
            Err(EvalError::Type(format!("{op:?} is not arithmetic")))
        }
    }
}

fn numbers(v: Value, what: &str) -> Result<Vec<f64>, EvalError> {
    match v {
        Value::Array(items) => items.into_iter().map(|i| num(i, what)).collect(),
        other => Err(EvalError::Type(format!(
            "{what} needs a list, got {}",
            other.kind()
        ))),
    }
}

fn call(func: Func, args: &[Node], env: &Env<'_>) -> Result<Value, EvalError> {
    let name = match func {
        Func::Min => "min",
        Func::Max => "max",
        Func::Mean => "mean",
        Func::Sum => "sum",
        _ => "a function",
    };
    if func.takes_predicate() {
        let [list, predicate] = args else {
            return Err(EvalError::Type("a predicate function takes 2 arguments".into()));
        };
        let Value::Array(items) = eval(list, env)? else {
            return Err(EvalError::Type("the first argument must be a list".into()));
        };
        let mut matched = 0usize;
        for item in &items {
            let inner = Env {
                values: env.values,
                element: Some(item),
            };
            if boolean(eval(predicate, &inner)?, "a predicate")? {
                matched += 1;
            }
        }
        return Ok(match func {
            Func::Count => Value::Num(matched as f64),
            Func::All => Value::Bool(matched == items.len()),
            Func::Any => Value::Bool(matched > 0),
            _ => Value::Bool(matched == 0),
        });
    }
    let values = args.iter().map(|a| eval(a, env)).collect::<Result<Vec<_>, _>>()?;
    let mut values = values.into_iter();
    let first = values.next().unwrap_or(Value::Nil);
    let xs: Vec<f64> = match (func, first) {
        (Func::Min | Func::Max | Func::Sum | Func::Mean, Value::Array(items)) if values.len() == 0 => {
            numbers(Value::Array(items), name)?
        }
        (_, first) => std::iter::once(first)
            .chain(values)
            .map(|v| num(v, name))
            .collect::<Result<_, _>>()?,
    };
    let one = xs.first().copied();
    let result = match func {
        Func::Abs => one.map(f64::abs),
        Func::Ceil => one.map(f64::ceil),
        Func::Floor => one.map(f64::floor),
        Func::Round => one.map(f64::round),
        Func::Float => one,
        Func::Int => one.map(f64::trunc),
        Func::Min => xs.iter().copied().reduce(f64::min),
        Func::Max => xs.iter().copied().reduce(f64::max),
        Func::Sum => Some(xs.iter().sum()),
        Func::Mean if xs.is_empty() => None,
        Func::Mean => Some(xs.iter().sum::<f64>() / xs.len() as f64),
        Func::Count | Func::All | Func::Any | Func::None => None,
    };
    match result {
        Some(n) => finite(n),
        None => Err(EvalError::Empty(name)),
    }
}

#[cfg(test)]
mod tests;
