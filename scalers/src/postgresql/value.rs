//! The query's one value as a number: which column types ebb accepts and how their binary form
//! becomes an `f64`. Pure.
//!
//! As KEDA (which scans into a `float64`): integers, floating-point numbers and `numeric`, and
//! text holding a number. Unlike KEDA, `NaN` and infinities are refused: the HPA cannot divide by
//! them.

use std::error::Error as StdError;

use tokio_postgres::types::{FromSql, Type};

/// Why the query's value is not a usable number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// The column's type is not a number or text.
    #[error(
        "the query's column has type {0}; it must be a number (integer, float or numeric) or text holding one"
    )]
    Type(String),
    /// Text that is not a number (the text is not quoted: it could be anything).
    #[error("the query's value is text that is not a number")]
    NotANumber,
    /// NaN or an infinity.
    #[error("the query's value is not finite")]
    NotFinite,
    /// The bytes are not the type's binary form.
    #[error("the server sent a malformed {0} value")]
    Malformed(&'static str),
}

/// Whether ebb can read a column of this type as a number.
pub fn accepts(ty: &Type) -> bool {
    matches!(
        *ty,
        Type::INT2
            | Type::INT4
            | Type::INT8
            | Type::OID
            | Type::FLOAT4
            | Type::FLOAT8
            | Type::NUMERIC
            | Type::TEXT
            | Type::VARCHAR
            | Type::BPCHAR
            | Type::NAME
    )
}

/// The number in a column value's binary form.
pub fn decode(ty: &Type, raw: &[u8]) -> Result<f64, ValueError> {
    let fixed = |n: usize, what: &'static str| -> Result<&[u8], ValueError> {
        (raw.len() == n).then_some(raw).ok_or(ValueError::Malformed(what))
    };
    let value = match *ty {
        Type::INT2 => i16::from_be_bytes(array(fixed(2, "int2")?)) as f64,
        Type::INT4 => i32::from_be_bytes(array(fixed(4, "int4")?)) as f64,
        Type::OID => u32::from_be_bytes(array(fixed(4, "oid")?)) as f64,
        Type::INT8 => i64::from_be_bytes(array(fixed(8, "int8")?)) as f64,
        Type::FLOAT4 => f32::from_be_bytes(array(fixed(4, "float4")?)) as f64,
        Type::FLOAT8 => f64::from_be_bytes(array(fixed(8, "float8")?)),
        Type::NUMERIC => numeric(raw)?,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME => {
            let text = std::str::from_utf8(raw).map_err(|_| ValueError::NotANumber)?;
            text.trim_end_matches(' ')
                .parse::<f64>()
                .map_err(|_| ValueError::NotANumber)?
        }
        _ => return Err(ValueError::Type(ty.name().to_string())),
    };
    if value.is_finite() {
        Ok(value)
    } else {
        Err(ValueError::NotFinite)
    }
}

fn array<const N: usize>(bytes: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&bytes[..N]);
    out
}

/// `numeric`'s binary form: digit count, weight, sign, display scale, then base-10000 digits.
fn numeric(raw: &[u8]) -> Result<f64, ValueError> {
    const BAD: ValueError = ValueError::Malformed("numeric");
    let word = |i: usize| -> Result<u16, ValueError> {
        raw.get(i..i + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or(BAD)
    };
    let ndigits = word(0)? as usize;
    let weight = word(2)? as i16 as i32;
    let sign = word(4)?;
    if raw.len() != 8 + 2 * ndigits {
        return Err(BAD);
    }
    match sign {
        0x0000 | 0x4000 => {}
        // NaN, +Infinity, -Infinity.
        0xC000 | 0xD000 | 0xF000 => return Err(ValueError::NotFinite),
        _ => return Err(BAD),
    }
    let mut value = 0.0f64;
    for i in 0..ndigits {
        let digit = word(8 + 2 * i)?;
        if digit >= 10_000 {
            return Err(BAD);
        }
        value += f64::from(digit) * 10_000f64.powi(weight - i as i32);
    }
    Ok(if sign == 0x4000 { -value } else { value })
}

/// One column value read through tokio-postgres (read it as `Option<Number>`: `None` is SQL NULL).
#[derive(Debug, Clone, PartialEq)]
pub struct Number(pub Result<f64, ValueError>);

impl<'a> FromSql<'a> for Number {
    fn from_sql(ty: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn StdError + Sync + Send>> {
        Ok(Number(decode(ty, raw)))
    }

    fn accepts(ty: &Type) -> bool {
        accepts(ty)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // Any bytes as any accepted type: a number or an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(raw in prop::collection::vec(any::<u8>(), 0..40)) {
            for ty in [Type::INT2, Type::INT4, Type::INT8, Type::FLOAT4, Type::FLOAT8, Type::NUMERIC, Type::TEXT] {
                if let Ok(v) = decode(&ty, &raw) {
                    prop_assert!(v.is_finite());
                }
            }
        }
    }

    fn numeric_bytes(weight: i16, sign: u16, scale: u16, digits: &[u16]) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend((digits.len() as u16).to_be_bytes());
        out.extend(weight.to_be_bytes());
        out.extend(sign.to_be_bytes());
        out.extend(scale.to_be_bytes());
        for d in digits {
            out.extend(d.to_be_bytes());
        }
        out
    }

    #[test]
    fn integers_and_floats() {
        assert_eq!(decode(&Type::INT2, &(-7i16).to_be_bytes()), Ok(-7.0));
        assert_eq!(decode(&Type::INT4, &42i32.to_be_bytes()), Ok(42.0));
        assert_eq!(
            decode(&Type::INT8, &(1i64 << 40).to_be_bytes()),
            Ok((1u64 << 40) as f64)
        );
        assert_eq!(decode(&Type::FLOAT4, &2.5f32.to_be_bytes()), Ok(2.5));
        assert_eq!(decode(&Type::FLOAT8, &0.125f64.to_be_bytes()), Ok(0.125));
        assert_eq!(
            decode(&Type::FLOAT8, &f64::NAN.to_be_bytes()),
            Err(ValueError::NotFinite)
        );
        assert_eq!(decode(&Type::INT4, &[0, 1]), Err(ValueError::Malformed("int4")));
    }

    #[test]
    fn numerics() {
        // 12345.678 = digits [1, 2345, 6780], weight 1.
        let v = decode(&Type::NUMERIC, &numeric_bytes(1, 0, 3, &[1, 2345, 6780])).unwrap();
        assert!((v - 12345.678).abs() < 1e-9, "{v}");
        assert_eq!(
            decode(&Type::NUMERIC, &numeric_bytes(0, 0x4000, 0, &[3])),
            Ok(-3.0)
        );
        assert_eq!(decode(&Type::NUMERIC, &numeric_bytes(0, 0, 0, &[])), Ok(0.0));
        // 0.05 = digit [500] at weight -1.
        assert_eq!(decode(&Type::NUMERIC, &numeric_bytes(-1, 0, 2, &[500])), Ok(0.05));
        assert_eq!(
            decode(&Type::NUMERIC, &numeric_bytes(0, 0xC000, 0, &[])),
            Err(ValueError::NotFinite)
        );
        assert_eq!(
            decode(&Type::NUMERIC, &numeric_bytes(0, 0, 0, &[10_000])),
            Err(ValueError::Malformed("numeric"))
        );
        assert_eq!(
            decode(&Type::NUMERIC, &[0, 2, 0, 0]),
            Err(ValueError::Malformed("numeric"))
        );
    }

    #[test]
    fn text_holding_a_number_and_other_types() {
        assert_eq!(decode(&Type::TEXT, b"12.5"), Ok(12.5));
        assert_eq!(decode(&Type::BPCHAR, b"3   "), Ok(3.0));
        assert_eq!(decode(&Type::TEXT, b"twelve"), Err(ValueError::NotANumber));
        assert_eq!(decode(&Type::TEXT, b"NaN"), Err(ValueError::NotFinite));
        assert_eq!(decode(&Type::TEXT, &[0xff]), Err(ValueError::NotANumber));
        assert!(!accepts(&Type::BOOL) && accepts(&Type::NUMERIC));
        assert_eq!(
            decode(&Type::BOOL, &[1]),
            Err(ValueError::Type("bool".to_string()))
        );
    }
}
