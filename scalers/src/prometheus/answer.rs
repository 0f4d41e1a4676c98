//! Reading the value out of a Prometheus `/api/v1/query` answer, as KEDA does where the server
//! answered and differently where it did not: pure, tested without a server.
//!
//! - `status: success` with an instant vector of one sample: its value.
//! - An empty vector (the server answered "no series"): 0 when `ignoreNullValues` (the default),
//!   else an error, as in KEDA.
//! - More than one sample: an error, as in KEDA.
//! - A NaN or ±Inf value: 0 when `ignoreNullValues`, else an error, as in KEDA.
//! - A scalar result (`scalar(…)`, a number literal): its value (KEDA cannot read one and fails).
//! - `status: error`, a body without `status: success`, a range vector (matrix), a string, a
//!   sample without a float value (a native histogram) or anything else malformed: always an
//!   error, never a 0 (KEDA reads a body without a result, or a matrix, as "no series").
//!
//! Text the server wrote (its error message, an unknown result type) is shown cut to
//! [`MAX_SERVER_TEXT`] characters with control characters replaced; the caller redacts the
//! trigger's own secrets from it.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

use crate::common::http::json_problem;

/// The most characters of server-written text (an error message) an error repeats.
pub const MAX_SERVER_TEXT: usize = 200;

/// Why an answer gives no value.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AnswerError {
    /// Not the JSON shape of a Prometheus API answer (the text says where, never quoting it).
    #[error("the answer is not a Prometheus API answer: {0}")]
    Malformed(String),
    /// The server reported an error (`status: error`).
    #[error("Prometheus reported an error: {0}")]
    QueryFailed(String),
    /// `status` is neither `success` nor `error`, or missing.
    #[error("the answer's status is {0}, not \"success\"")]
    NotSuccess(String),
    /// The query matched no series and `ignoreNullValues` is false.
    #[error("the query returned no series (set ignoreNullValues: true to read that as 0)")]
    NoSeries,
    /// The query returned several series.
    #[error("the query returned {0} series; it must return one (aggregate it, e.g. with sum(…))")]
    ManySeries(usize),
    /// A range vector (`up[5m]`).
    #[error("the query returned a range vector (matrix); use an instant vector, e.g. rate(…[5m])")]
    RangeVector,
    /// A result type that holds no number (`string`) or that ebb does not know.
    #[error("the query returned a result of type {0}, not a vector or a scalar")]
    OtherType(String),
    /// A sample without a float value (a native histogram sample).
    #[error("the sample has no float value (a native histogram?); query a float series")]
    NoFloatValue,
    /// The value is not a number.
    #[error("the value is not a number")]
    NotANumber,
    /// NaN or ±Inf with `ignoreNullValues` false.
    #[error("the query returned {0} (set ignoreNullValues: true to read that as 0)")]
    NotFinite(f64),
}

#[derive(Deserialize)]
struct Answer<'a> {
    #[serde(default)]
    status: Option<String>,
    #[serde(borrow, default)]
    data: Option<Data<'a>>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Deserialize)]
struct Data<'a> {
    #[serde(rename = "resultType")]
    result_type: String,
    #[serde(borrow)]
    result: &'a RawValue,
}

/// One sample of an instant vector: its value only (the labels are skipped, not built).
#[derive(Deserialize)]
struct VectorSample {
    #[serde(default)]
    value: Option<(IgnoredAny, String)>,
}

/// Server-written text made safe to repeat: control characters replaced, cut to
/// [`MAX_SERVER_TEXT`] characters.
pub fn server_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_SERVER_TEXT)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().nth(MAX_SERVER_TEXT).is_some() {
        out.push('…');
    }
    out
}

/// The text of a `status: error` answer (`<errorType>: <error>`), if the body is one. For
/// answers with a non-success HTTP status, which Prometheus sends with such a body.
pub fn error_text(body: &[u8]) -> Option<String> {
    let answer: Answer<'_> = serde_json::from_slice(body).ok()?;
    match (answer.status.as_deref(), answer.error_type, answer.error) {
        (Some("error"), kind, Some(error)) => Some(server_text(&match kind {
            Some(kind) => format!("{kind}: {error}"),
            None => error,
        })),
        _ => None,
    }
}

/// The value of a successful answer's body, with KEDA's `ignoreNullValues` rule for an empty
/// vector and for NaN/±Inf. See the module's documentation for every case.
pub fn value_of(body: &[u8], ignore_null_values: bool) -> Result<f64, AnswerError> {
    let answer: Answer<'_> =
        serde_json::from_slice(body).map_err(|e| AnswerError::Malformed(json_problem(&e)))?;
    match answer.status.as_deref() {
        Some("success") => {}
        Some("error") => {
            let text = match (answer.error_type, answer.error) {
                (Some(kind), Some(error)) => format!("{kind}: {error}"),
                (None, Some(error)) => error,
                (Some(kind), None) => kind,
                (None, None) => "no message".to_string(),
            };
            return Err(AnswerError::QueryFailed(server_text(&text)));
        }
        Some(other) => return Err(AnswerError::NotSuccess(format!("{:?}", server_text(other)))),
        None => return Err(AnswerError::NotSuccess("missing".to_string())),
    }
    let Some(data) = answer.data else {
        return Err(AnswerError::Malformed("it has no data".to_string()));
    };
    let malformed = |e: serde_json::Error| AnswerError::Malformed(json_problem(&e));
    let raw = match data.result_type.as_str() {
        "vector" => {
            let samples: Vec<VectorSample> = serde_json::from_str(data.result.get()).map_err(malformed)?;
            match samples.as_slice() {
                [] if ignore_null_values => return Ok(0.0),
                [] => return Err(AnswerError::NoSeries),
                [one] => match &one.value {
                    Some((_, raw)) => raw.clone(),
                    None => return Err(AnswerError::NoFloatValue),
                },
                many => return Err(AnswerError::ManySeries(many.len())),
            }
        }
        "scalar" => {
            let (_, raw): (IgnoredAny, String) =
                serde_json::from_str(data.result.get()).map_err(malformed)?;
            raw
        }
        "matrix" => return Err(AnswerError::RangeVector),
        other => return Err(AnswerError::OtherType(format!("{:?}", server_text(other)))),
    };
    let value = parse_sample_value(&raw).ok_or(AnswerError::NotANumber)?;
    match value.is_finite() {
        true => Ok(value),
        false if ignore_null_values => Ok(0.0),
        false => Err(AnswerError::NotFinite(value)),
    }
}

/// A sample value as Prometheus writes it: a decimal float, `NaN`, `+Inf` or `-Inf`.
fn parse_sample_value(raw: &str) -> Option<f64> {
    match raw {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        // Rust would also take "inf" and "infinity", which Prometheus never writes.
        _ if raw
            .bytes()
            .any(|b| b.is_ascii_alphabetic() && b != b'e' && b != b'E') =>
        {
            None
        }
        _ => raw.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector(values: &[&str]) -> String {
        let samples: Vec<String> = values
            .iter()
            .map(|v| format!(r#"{{"metric":{{"job":"w"}},"value":[1796356508.122,"{v}"]}}"#))
            .collect();
        format!(
            r#"{{"status":"success","data":{{"resultType":"vector","result":[{}]}}}}"#,
            samples.join(",")
        )
    }

    fn value(body: &str, ignore: bool) -> Result<f64, AnswerError> {
        value_of(body.as_bytes(), ignore)
    }

    /// KEDA's result table (prometheus_scaler_test.go), on bodies as Prometheus writes them.
    #[test]
    fn keda_result_cases() {
        // no values: 0, or an error without ignoreNullValues.
        assert_eq!(value(&vector(&[]), true), Ok(0.0));
        assert_eq!(value(&vector(&[]), false), Err(AnswerError::NoSeries));
        // valid value.
        assert_eq!(value(&vector(&["2"]), true), Ok(2.0));
        assert_eq!(value(&vector(&["2.5e3"]), false), Ok(2500.0));
        // multiple results.
        assert_eq!(value(&vector(&["1", "2"]), true), Err(AnswerError::ManySeries(2)));
        // ±Inf and NaN: 0, or an error without ignoreNullValues.
        for special in ["+Inf", "-Inf", "NaN"] {
            assert_eq!(value(&vector(&[special]), true), Ok(0.0), "{special}");
            let e = value(&vector(&[special]), false).unwrap_err();
            assert!(matches!(e, AnswerError::NotFinite(_)), "{special}: {e}");
        }
        // not enough values (KEDA: an error whatever ignoreNullValues says).
        let short = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":["1"]}]}}"#;
        assert!(matches!(value(short, true), Err(AnswerError::Malformed(_))));
    }

    /// Where KEDA reads a 0 from an answer that holds no "no series": ebb fails.
    #[test]
    fn answers_that_are_not_an_empty_result_are_errors() {
        // KEDA: `{}` and an empty value list are read as 0 with ignoreNullValues.
        assert_eq!(value("{}", true), Err(AnswerError::NotSuccess("missing".into())));
        let empty_value = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[]}]}}"#;
        assert!(matches!(value(empty_value, true), Err(AnswerError::Malformed(_))));
        // A 200 with status error (a proxy, a partial-response setting): the error, not 0.
        let failed = r#"{"status":"error","errorType":"execution","error":"query timed out"}"#;
        assert_eq!(
            value(failed, true),
            Err(AnswerError::QueryFailed("execution: query timed out".into()))
        );
        // KEDA reads a matrix as "no values" (0); it is a query mistake.
        let matrix = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1,"3"]]}]}}"#;
        assert_eq!(value(matrix, true), Err(AnswerError::RangeVector));
        let string = r#"{"status":"success","data":{"resultType":"string","result":[1,"x"]}}"#;
        assert!(matches!(value(string, true), Err(AnswerError::OtherType(_))));
        let histogram = r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"histogram":[1,{"count":"2"}]}]}}"#;
        assert_eq!(value(histogram, true), Err(AnswerError::NoFloatValue));
        for bad in ["", "not json", r#"{"status":"success"}"#, "[1]"] {
            assert!(value(bad, true).is_err(), "{bad:?}");
        }
        let nan_text = vector(&["infinity"]);
        assert_eq!(value(&nan_text, true), Err(AnswerError::NotANumber));
        assert_eq!(value(&vector(&["12abc"]), true), Err(AnswerError::NotANumber));
        // A null value (KEDA: -1).
        let null = r#"{"status":"success","data":{"resultType":"vector","result":[{"value":[1,null]}]}}"#;
        assert!(matches!(value(null, true), Err(AnswerError::Malformed(_))));
    }

    #[test]
    fn scalars_are_read() {
        let scalar = r#"{"status":"success","data":{"resultType":"scalar","result":[1796356508.158,"7"]}}"#;
        assert_eq!(value(scalar, false), Ok(7.0));
        let inf = r#"{"status":"success","data":{"resultType":"scalar","result":[1,"+Inf"]}}"#;
        assert_eq!(value(inf, true), Ok(0.0));
        assert!(value(inf, false).is_err());
    }

    #[test]
    fn server_text_is_cut_and_never_breaks_a_line() {
        let body = format!(
            r#"{{"status":"error","errorType":"bad_data","error":"line1\nline2 {}"}}"#,
            "x".repeat(500)
        );
        let text = error_text(body.as_bytes()).unwrap();
        assert!(text.starts_with("bad_data: line1 line2 x"), "{text}");
        assert!(!text.contains('\n'));
        assert_eq!(text.chars().count(), MAX_SERVER_TEXT + 1);
        assert_eq!(error_text(b"{}"), None);
        assert_eq!(error_text(vector(&["1"]).as_bytes()), None);
        // Errors never quote a malformed body.
        let e = value(
            r#"{"status":"success","data":{"resultType":"vector","result":"secret-token"}}"#,
            true,
        )
        .unwrap_err();
        assert!(!e.to_string().contains("secret-token"), "{e}");
    }

    proptest::proptest! {
        // Any body, and any value text in a well-formed answer: a value or an error, no panic;
        // a value is always finite.
        #[test]
        fn arbitrary_answers_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256), raw in ".{0,24}", ignore: bool) {
            if let Ok(v) = value_of(&body, ignore) {
                proptest::prop_assert!(v.is_finite());
            }
            let doc = serde_json::json!({"status": "success", "data": {"resultType": "vector", "result": [{"value": [1, raw]}]}});
            if let Ok(v) = value_of(doc.to_string().as_bytes(), ignore) {
                proptest::prop_assert!(v.is_finite());
            }
            let _ = error_text(&body);
        }
    }
}
