//! Kubernetes quantities (`10`, `1.5`, `500m`, `2Ki`, `3G`) as numbers: what metrics-api values
//! and the external metrics API's `value` fields hold.

/// Parses a number or a Kubernetes quantity (`10`, `-1.5`, `1e3`, `500m`, `2k`, `1Ki`, `3G`) to a
/// float. `None` for anything else (including `NaN` and `inf`); an overflow gives an infinite value.
pub fn parse_quantity(s: &str) -> Option<f64> {
    const SUFFIXES: &[(&str, f64)] = &[
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let s = s.trim();
    let has_digit = |t: &str| t.bytes().any(|b| b.is_ascii_digit());
    // Plain numbers, with an optional decimal exponent (`1e3`, as Kubernetes allows). The byte
    // check keeps out what Rust's parser also accepts: `inf`, `NaN`, `infinity`.
    if has_digit(s)
        && s.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
        && let Ok(v) = s.parse::<f64>()
    {
        return Some(v);
    }
    let is_decimal = |t: &str| has_digit(t) && t.bytes().all(|b| b.is_ascii_digit() || b"+-.".contains(&b));
    SUFFIXES.iter().find_map(|(suffix, factor)| {
        let number = s.strip_suffix(suffix)?;
        if !is_decimal(number) {
            return None;
        }
        number.parse::<f64>().ok().map(|v| v * factor)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantities() {
        let cases: &[(&str, Option<f64>)] = &[
            ("10", Some(10.0)),
            (" 1.5 ", Some(1.5)),
            ("-3", Some(-3.0)),
            ("+4", Some(4.0)),
            (".5", Some(0.5)),
            ("1e3", Some(1000.0)),
            ("2E-1", Some(0.2)),
            ("500m", Some(0.5)),
            ("2k", Some(2000.0)),
            ("1Ki", Some(1024.0)),
            ("1.5Mi", Some(1.5 * 1_048_576.0)),
            ("3G", Some(3e9)),
            ("1E", Some(1e18)),
            ("250u", Some(250e-6)),
            ("", None),
            ("m", None),
            ("abc", None),
            ("NaN", None),
            ("inf", None),
            ("infinity", None),
            ("1e3k", None),
            ("1x", None),
            ("--1", None),
            ("1 k", None),
        ];
        for (input, expected) in cases {
            let got = parse_quantity(input);
            match (got, expected) {
                (Some(g), Some(e)) => assert!((g - e).abs() <= e.abs() * 1e-12, "{input}: {g} != {e}"),
                (None, None) => {}
                _ => panic!("{input}: got {got:?}, expected {expected:?}"),
            }
        }
    }

    proptest! {
        // Quantity parsing never panics and never yields NaN.
        #[test]
        fn quantity_never_panics(s in ".{0,12}|[0-9.eE+-]{0,8}[numkMGTPEi]{0,2}") {
            if let Some(v) = parse_quantity(&s) {
                prop_assert!(!v.is_nan());
            }
        }
    }
}
