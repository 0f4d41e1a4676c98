use super::*;
use proptest::prelude::*;

const NAMES: [&str; 3] = ["a", "b", "trig_one"];

fn run(text: &str, values: [Option<f64>; 3]) -> Result<Outcome, String> {
    let f = Formula::compile(text, &NAMES).map_err(|e| e.to_string())?;
    f.evaluate(&values).map_err(|e| e.to_string())
}

fn num(text: &str, a: f64, b: f64) -> f64 {
    match run(text, [Some(a), Some(b), Some(0.0)]) {
        Ok(Some(n)) => n,
        other => panic!("{text}: {other:?}"),
    }
}

#[test]
fn arithmetic_follows_expr_lang_precedence() {
    assert_eq!(num("(a + b) / 2", 30.0, 10.0), 20.0);
    assert_eq!(num("a + b * 2", 1.0, 3.0), 7.0);
    assert_eq!(num("a - b - 1", 10.0, 3.0), 6.0, "left-associative");
    assert_eq!(num("2 ** 3 ** 2", 0.0, 0.0), 512.0, "right-associative");
    assert_eq!(num("2 ^ 3", 0.0, 0.0), 8.0);
    assert_eq!(num("-2 ** 2", 0.0, 0.0), -4.0, "unary minus binds looser than **");
    assert_eq!(num("-a * b", 2.0, 3.0), -6.0);
    assert_eq!(num("7 / 2", 0.0, 0.0), 3.5, "/ divides as floats");
    assert_eq!(num("7 % 4", 0.0, 0.0), 3.0);
    assert_eq!(num("1_000 + .5 + 1e2", 0.0, 0.0), 1100.5);
}

#[test]
fn conditionals_and_logic() {
    assert_eq!(num("a > 5 ? a : b", 6.0, 1.0), 6.0);
    assert_eq!(num("a > 5 ? a : b", 5.0, 1.0), 1.0, "strict >");
    assert_eq!(num("trig_one > 2 ? a + b : 1", 4.0, 1.0), 1.0);
    assert_eq!(num("a > 1 && b > 1 ? 5 : 0", 2.0, 2.0), 5.0);
    assert_eq!(num("a > 1 and b > 1 ? 5 : 0", 2.0, 0.0), 0.0);
    assert_eq!(num("a > 1 || b > 1 ? 5 : 0", 0.0, 2.0), 5.0);
    assert_eq!(num("not (a > 1) or false ? 5 : 0", 0.0, 0.0), 5.0);
    assert_eq!(
        num("a == b ? 1 : a != b ? 2 : 3", 1.0, 2.0),
        2.0,
        "nested, right-associative"
    );
    assert_eq!(num("a < 1 ? 1 : a <= 2 ? 2 : a >= 3 ? 3 : 4", 2.5, 0.0), 4.0);
}

#[test]
fn functions() {
    assert_eq!(num("min(a, b)", 3.0, 2.0), 2.0);
    assert_eq!(num("max(a, b, 7)", 3.0, 2.0), 7.0);
    assert_eq!(num("max([a, b])", 3.0, 4.0), 4.0);
    assert_eq!(num("abs(a - b)", 3.0, 5.0), 2.0);
    assert_eq!(num("ceil(a / b)", 7.0, 2.0), 4.0);
    assert_eq!(num("floor(a / b)", 7.0, 2.0), 3.0);
    assert_eq!(
        num("round(a)", 2.5, 0.0),
        3.0,
        "half away from zero, as Go's math.Round"
    );
    assert_eq!(num("int(a) + float(b)", -2.7, 0.5), -1.5, "int truncates");
    assert_eq!(num("sum([a, b, 1])", 3.0, 2.0), 6.0);
    assert_eq!(num("mean([a, b])", 3.0, 2.0), 2.5);
    // KEDA's own e2e formula.
    let keda = "count([a, b], {# > 1}) > 1 ? 5 : 0";
    assert_eq!(num(keda, 2.0, 2.0), 5.0);
    assert_eq!(num(keda, 2.0, 1.0), 0.0);
    assert_eq!(num("count([a, b], # > 1)", 2.0, 3.0), 2.0, "braces are optional");
    assert_eq!(num("all([a, b], {# > 1}) ? 1 : 0", 2.0, 3.0), 1.0);
    assert_eq!(num("any([a, b], {# > 2}) ? 1 : 0", 2.0, 3.0), 1.0);
    assert_eq!(num("none([a, b], {# > 2}) ? 1 : 0", 2.0, 3.0), 0.0);
}

#[test]
fn nil_values_and_coalescing() {
    // KEDA 2.20's fallback.behavior scalingModifiers example: the first healthy trigger, else 8.
    let f = "a ?? b ?? 8";
    assert_eq!(run(f, [Some(1.0), Some(2.0), None]), Ok(Some(1.0)));
    assert_eq!(run(f, [None, Some(2.0), None]), Ok(Some(2.0)));
    assert_eq!(run(f, [None, None, None]), Ok(Some(8.0)));
    assert_eq!(run("a ?? b", [None, None, None]), Ok(None), "a nil result");
    assert_eq!(
        run("a ?? 0 + 1", [None, None, None]),
        Ok(Some(1.0)),
        "?? binds tightest"
    );
    assert_eq!(run("a == nil ? 3 : a", [None, None, None]), Ok(Some(3.0)));
    assert_eq!(run("nil", [None, None, None]), Ok(None));
    let err = run("a + 1", [None, None, None]).unwrap_err();
    assert!(err.contains("nil"), "{err}");
}

#[test]
fn evaluation_errors_are_errors_not_values() {
    assert_eq!(
        run("a / b", [Some(1.0), Some(0.0), None]),
        Err("division by zero".into())
    );
    assert_eq!(
        run("a % b", [Some(1.0), Some(0.0), None]),
        Err("division by zero".into())
    );
    assert_eq!(
        run("a ** 1000", [Some(10.0), None, None]),
        Err("the result is not a finite number".into())
    );
    assert!(run("a", [Some(f64::NAN), None, None]).is_err());
    assert!(run("(0 - 1) ** 0.5", [None, None, None]).is_err(), "NaN");
    assert!(run("min([])", [None, None, None]).unwrap_err().contains("empty"));
}

#[test]
fn compile_errors_say_what_is_wrong() {
    let e = Formula::compile("a + c", &NAMES).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"c\" is not the name of a trigger (triggers: a, b, trig_one)"
    );
    let e = Formula::compile("a + b", &[]).unwrap_err();
    assert!(e.to_string().contains("none named"), "{e}");
    let e = Formula::compile("sqrt(a)", &NAMES).unwrap_err();
    assert!(e.to_string().starts_with("unknown function \"sqrt\""), "{e}");
    let e = Formula::compile("(a + b", &NAMES).unwrap_err();
    assert_eq!(
        e.to_string(),
        "syntax error at character 7: expected \")\", found the end"
    );
    let e = Formula::compile("a +* b", &NAMES).unwrap_err();
    assert!(matches!(e, FormulaError::Syntax { position: 3, .. }), "{e}");
    assert!(matches!(
        Formula::compile("a > b", &NAMES),
        Err(FormulaError::Type(_))
    ));
    assert!(matches!(
        Formula::compile("a && b", &NAMES),
        Err(FormulaError::Type(_))
    ));
    assert!(matches!(
        Formula::compile("a ? 1 : 2", &NAMES),
        Err(FormulaError::Type(_))
    ));
    assert!(matches!(
        Formula::compile("[a, b]", &NAMES),
        Err(FormulaError::Type(_))
    ));
    assert!(matches!(
        Formula::compile("min(a, [b])", &NAMES),
        Err(FormulaError::Type(_))
    ));
    assert!(matches!(
        Formula::compile("# + 1", &NAMES),
        Err(FormulaError::Syntax { .. })
    ));
    assert!(matches!(
        Formula::compile("", &NAMES),
        Err(FormulaError::Syntax { .. })
    ));
    assert!(matches!(
        Formula::compile("a 'x'", &NAMES),
        Err(FormulaError::Syntax { .. })
    ));
    let deep = format!("{}a{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(Formula::compile(&deep, &NAMES), Err(FormulaError::TooDeep));
    let long = "a + ".repeat(2000) + "a";
    assert!(matches!(
        Formula::compile(&long, &NAMES),
        Err(FormulaError::TooLong { .. })
    ));
    let chain = "-".repeat(200) + "a";
    assert_eq!(Formula::compile(&chain, &NAMES), Err(FormulaError::TooDeep));
}

/// An arithmetic expression and its meaning, computed independently of the parser.
#[derive(Debug, Clone)]
enum Expr {
    Lit(u16),
    Var(usize),
    Neg(Box<Expr>),
    Op(char, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// Fully parenthesised text: the parser must not need precedence to agree.
    fn text(&self) -> String {
        match self {
            Expr::Lit(n) => n.to_string(),
            Expr::Var(i) => NAMES[*i].to_string(),
            Expr::Neg(e) => format!("(-{})", e.text()),
            Expr::Op(op, l, r) => format!("({} {op} {})", l.text(), r.text()),
        }
    }

    /// The value, or `None` where ebb must report an error (division by zero, overflow).
    fn value(&self, vars: &[f64]) -> Option<f64> {
        let v = match self {
            Expr::Lit(n) => f64::from(*n),
            Expr::Var(i) => vars[*i],
            Expr::Neg(e) => -e.value(vars)?,
            Expr::Op(op, l, r) => {
                let (a, b) = (l.value(vars)?, r.value(vars)?);
                match op {
                    '+' => a + b,
                    '-' => a - b,
                    '*' => a * b,
                    _ if b == 0.0 => return None,
                    _ => a / b,
                }
            }
        };
        v.is_finite().then_some(v)
    }
}

fn expr() -> impl Strategy<Value = Expr> {
    let leaf = prop_oneof![(0u16..1000).prop_map(Expr::Lit), (0usize..3).prop_map(Expr::Var)];
    leaf.prop_recursive(6, 48, 2, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Neg(Box::new(e))),
            (
                prop::sample::select(vec!['+', '-', '*', '/']),
                inner.clone(),
                inner
            )
                .prop_map(|(op, l, r)| Expr::Op(op, Box::new(l), Box::new(r))),
        ]
    })
}

/// Arithmetic written the way people write it, relying on precedence (no parentheses added).
fn flat() -> impl Strategy<Value = (Vec<u16>, Vec<char>)> {
    (1usize..8).prop_flat_map(|n| {
        (
            prop::collection::vec(1u16..100, n + 1),
            prop::collection::vec(prop::sample::select(vec!['+', '-', '*', '/']), n),
        )
    })
}

/// The reference for [`flat`]: `*` and `/` first, then `+` and `-`, each left to right.
fn flat_value(nums: &[u16], ops: &[char]) -> f64 {
    let mut terms = vec![f64::from(nums[0])];
    let mut signs = vec![1.0];
    for (op, n) in ops.iter().zip(&nums[1..]) {
        let n = f64::from(*n);
        match op {
            '*' => *terms.last_mut().unwrap() *= n,
            '/' => *terms.last_mut().unwrap() /= n,
            sign => {
                terms.push(n);
                signs.push(if *sign == '+' { 1.0 } else { -1.0 });
            }
        }
    }
    terms.iter().zip(&signs).map(|(t, s)| t * s).sum()
}

proptest! {
    #[test]
    fn compiling_any_text_never_panics(text in ".{0,300}") {
        if let Ok(f) = Formula::compile(&text, &NAMES) {
            let _ = f.evaluate(&[Some(1.0), None, Some(-1.0)]);
        }
    }

    #[test]
    fn compiling_formula_like_text_never_panics(
        text in r"[ab()\[\]{}#?:!,<>=&|+*/%^0-9. -]{0,200}|(trig_one|nil|true|min|count|\?\?| ){0,40}",
        a in proptest::num::f64::ANY,
    ) {
        if let Ok(f) = Formula::compile(&text, &NAMES)
            && let Ok(Some(n)) = f.evaluate(&[Some(a), None, Some(0.0)])
        {
            prop_assert!(n.is_finite());
        }
    }

    #[test]
    fn arithmetic_agrees_with_the_reference(e in expr(), vars in prop::collection::vec(-1000.0f64..1000.0, 3)) {
        let f = Formula::compile(&e.text(), &NAMES).unwrap();
        let got = f.evaluate(&[Some(vars[0]), Some(vars[1]), Some(vars[2])]);
        match e.value(&vars) {
            Some(want) => {
                let got = got.unwrap().unwrap();
                prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{} = {got}, want {want}", e.text());
            }
            None => prop_assert!(got.is_err(), "{} gave {got:?}", e.text()),
        }
    }

    #[test]
    fn precedence_agrees_with_the_reference((nums, ops) in flat()) {
        let mut text = nums[0].to_string();
        for (op, n) in ops.iter().zip(&nums[1..]) {
            text.push_str(&format!(" {op} {n}"));
        }
        let got = Formula::compile(&text, &NAMES).unwrap().evaluate(&[]).unwrap().unwrap();
        let want = flat_value(&nums, &ops);
        prop_assert!((got - want).abs() <= 1e-9 * want.abs().max(1.0), "{text} = {got}, want {want}");
    }

    #[test]
    fn ternary_picks_the_branch_min_max_agree(a in -1e6f64..1e6, b in -1e6f64..1e6) {
        let vals = [Some(a), Some(b), None];
        let f = |t: &str| Formula::compile(t, &NAMES).unwrap().evaluate(&vals).unwrap().unwrap();
        prop_assert_eq!(f("a > b ? a : b"), a.max(b));
        prop_assert_eq!(f("max(a, b)"), a.max(b));
        prop_assert_eq!(f("min([a, b])"), a.min(b));
        prop_assert_eq!(f("abs(a)"), a.abs());
        prop_assert_eq!(f("ceil(a)"), a.ceil());
        prop_assert_eq!(f("trig_one ?? a"), a);
    }
}
