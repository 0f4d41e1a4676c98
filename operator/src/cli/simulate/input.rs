//! The series `ebb simulate` replays: CSV (`time,<trigger>...`, one row per point) or JSON
//! (`[{"time": 0, "values": {"<trigger>": 12}}]`). Times are seconds (from any origin) or
//! RFC 3339 timestamps, strictly increasing; a value is a number, or empty / missing / `error`
//! for a failing poll. Sizes are bounded and every problem names its line and column (CSV) or
//! its point (JSON); nothing here panics on input.

use jiff::Timestamp;
use serde_json::Value as Json;

/// The most points a series may have.
pub const MAX_POINTS: usize = 200_000;
/// The most columns (triggers) a series may have.
pub const MAX_COLUMNS: usize = 64;
/// The largest input accepted, in bytes.
pub const MAX_INPUT_BYTES: usize = 64 * 1024 * 1024;

/// Why a series cannot be read.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum InputError {
    /// The input is larger than [`MAX_INPUT_BYTES`].
    #[error("the input is {0} bytes, more than the {MAX_INPUT_BYTES} accepted")]
    TooLarge(usize),
    /// A CSV problem at a line (1-based) and column (1-based, by field).
    #[error("line {line}, column {column}: {message}")]
    Csv {
        /// Line.
        line: usize,
        /// Column (field number).
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A JSON problem at a point (0-based index) or in the document.
    #[error("{at}: {message}")]
    Json {
        /// Where: `point 3`, `point 3.values.lag`, or the parser's line and column.
        at: String,
        /// What is wrong.
        message: String,
    },
    /// The series has no point.
    #[error("the series has no point")]
    Empty,
}

/// One trigger's value at one point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell {
    /// The source answered this value.
    Value(f64),
    /// The source failed (empty, missing or `error`).
    Error,
}

/// A series: column names (as written) and points at strictly increasing times.
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// The column names, in order.
    pub columns: Vec<String>,
    /// Each point's time, in milliseconds since the first point.
    pub times_ms: Vec<i64>,
    /// Each point's cells, one per column.
    pub cells: Vec<Vec<Cell>>,
    /// The first point's time when the input gave RFC 3339 timestamps.
    pub start: Option<Timestamp>,
}

impl Series {
    /// The point in force at `t_ms`: the last one at or before it (the first before the first).
    pub fn at(&self, t_ms: i64) -> &[Cell] {
        let i = self.times_ms.partition_point(|t| *t <= t_ms);
        self.cells.get(i.saturating_sub(1)).map_or(&[], Vec::as_slice)
    }

    /// The last point's time.
    pub fn end_ms(&self) -> i64 {
        self.times_ms.last().copied().unwrap_or(0)
    }
}

/// A time as written: seconds, or an RFC 3339 timestamp.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Time {
    Seconds(f64),
    Stamp(Timestamp),
}

fn parse_time(text: &str) -> Result<Time, String> {
    let text = text.trim();
    if let Ok(s) = text.parse::<f64>() {
        return if s.is_finite() && s.abs() < 1e12 {
            Ok(Time::Seconds(s))
        } else {
            Err(format!("time {text:?} is out of range"))
        };
    }
    text.parse::<Timestamp>()
        .map(Time::Stamp)
        .map_err(|_| format!("time {text:?} is neither seconds nor an RFC 3339 timestamp"))
}

fn parse_cell(text: &str) -> Result<Cell, String> {
    let text = text.trim();
    if text.is_empty() || text.eq_ignore_ascii_case("error") {
        return Ok(Cell::Error);
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Cell::Value(v)),
        _ => Err(format!(
            "value {text:?} is not a number (or empty / error for a failing poll)"
        )),
    }
}

/// Builds the series' times in ms since the first, checking they all have one kind and increase.
/// `at(i)` names point `i` in errors.
fn times_ms(
    times: &[Time],
    at: impl Fn(usize) -> (usize, String),
) -> Result<(Vec<i64>, Option<Timestamp>), (usize, String)> {
    let Some(first) = times.first() else {
        return Ok((Vec::new(), None));
    };
    let mut out = Vec::with_capacity(times.len());
    for (i, t) in times.iter().enumerate() {
        let ms = match (first, t) {
            (Time::Seconds(a), Time::Seconds(b)) => ((b - a) * 1000.0).round() as i64,
            (Time::Stamp(a), Time::Stamp(b)) => b.duration_since(*a).as_millis() as i64,
            _ => return Err((at(i).0, "times mix seconds and timestamps".into())),
        };
        if let Some(prev) = out.last()
            && ms <= *prev
        {
            return Err((
                at(i).0,
                format!("time {} is not after the previous point's", at(i).1),
            ));
        }
        out.push(ms);
    }
    let start = match first {
        Time::Stamp(s) => Some(*s),
        Time::Seconds(_) => None,
    };
    Ok((out, start))
}

/// Reads a series, CSV or JSON (JSON when the text starts with `[`).
pub fn parse_series(text: &str) -> Result<Series, InputError> {
    if text.len() > MAX_INPUT_BYTES {
        return Err(InputError::TooLarge(text.len()));
    }
    if text.trim_start().starts_with('[') {
        parse_json(text)
    } else {
        parse_csv(text)
    }
}

/// Reads CSV: a header `time,<trigger>...`, then one row per point. No quoting.
pub fn parse_csv(text: &str) -> Result<Series, InputError> {
    let err = |line: usize, column: usize, message: String| InputError::Csv {
        line,
        column,
        message,
    };
    let mut lines = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
        .filter(|(_, l)| !l.trim().is_empty() && !l.trim_start().starts_with('#'));
    let Some((header_line, header)) = lines.next() else {
        return Err(InputError::Empty);
    };
    let fields: Vec<&str> = header.split(',').map(str::trim).collect();
    if fields.first().copied() != Some("time") {
        return Err(err(header_line, 1, "the header must start with `time`".into()));
    }
    let columns: Vec<String> = fields[1..].iter().map(|s| s.to_string()).collect();
    if columns.is_empty() {
        return Err(err(header_line, 2, "no trigger column after `time`".into()));
    }
    if columns.len() > MAX_COLUMNS {
        return Err(err(
            header_line,
            MAX_COLUMNS + 2,
            format!("more than {MAX_COLUMNS} columns"),
        ));
    }
    for (i, c) in columns.iter().enumerate() {
        if c.is_empty() || c.contains('"') {
            return Err(err(
                header_line,
                i + 2,
                "a column name must be non-empty and unquoted".into(),
            ));
        }
        if columns[..i].contains(c) {
            return Err(err(header_line, i + 2, format!("column {c:?} appears twice")));
        }
    }
    let mut times = Vec::new();
    let mut lines_of = Vec::new();
    let mut cells = Vec::new();
    for (line, row) in lines {
        if times.len() >= MAX_POINTS {
            return Err(err(line, 1, format!("more than {MAX_POINTS} points")));
        }
        let fields: Vec<&str> = row.split(',').collect();
        if fields.len() != columns.len() + 1 {
            return Err(err(
                line,
                fields.len().min(columns.len() + 1) + 1,
                format!("{} fields, the header has {}", fields.len(), columns.len() + 1),
            ));
        }
        times.push(parse_time(fields[0]).map_err(|m| err(line, 1, m))?);
        let row: Vec<Cell> = fields[1..]
            .iter()
            .enumerate()
            .map(|(i, f)| parse_cell(f).map_err(|m| err(line, i + 2, m)))
            .collect::<Result<_, _>>()?;
        lines_of.push((line, fields[0].trim().to_string()));
        cells.push(row);
    }
    if cells.is_empty() {
        return Err(InputError::Empty);
    }
    let (times_ms, start) = times_ms(&times, |i| lines_of[i].clone()).map_err(|(line, m)| err(line, 1, m))?;
    Ok(Series {
        columns,
        times_ms,
        cells,
        start,
    })
}

/// Reads JSON: `[{"time": <seconds or RFC 3339>, "values": {"<trigger>": <number|null|"error">}}]`.
/// A trigger missing from a point's `values` fails at that point.
pub fn parse_json(text: &str) -> Result<Series, InputError> {
    let doc: Json = serde_json::from_str(text).map_err(|e| InputError::Json {
        at: format!("line {}, column {}", e.line(), e.column()),
        message: e.to_string(),
    })?;
    let jerr = |at: String, message: String| InputError::Json { at, message };
    let Json::Array(points) = doc else {
        return Err(jerr("the document".into(), "must be an array of points".into()));
    };
    if points.len() > MAX_POINTS {
        return Err(jerr(
            "the document".into(),
            format!("more than {MAX_POINTS} points"),
        ));
    }
    let mut columns: Vec<String> = Vec::new();
    for (i, p) in points.iter().enumerate() {
        let Some(values) = p.get("values").and_then(Json::as_object) else {
            return Err(jerr(format!("point {i}"), "needs an object `values`".into()));
        };
        for k in values.keys() {
            if !columns.contains(k) {
                if columns.len() >= MAX_COLUMNS {
                    return Err(jerr(
                        format!("point {i}"),
                        format!("more than {MAX_COLUMNS} triggers"),
                    ));
                }
                columns.push(k.clone());
            }
        }
    }
    let mut times = Vec::with_capacity(points.len());
    let mut cells = Vec::with_capacity(points.len());
    for (i, p) in points.iter().enumerate() {
        let time = match p.get("time") {
            Some(Json::Number(n)) => n.as_f64().map(|n| n.to_string()).unwrap_or_default(),
            Some(Json::String(s)) => s.clone(),
            _ => {
                return Err(jerr(
                    format!("point {i}.time"),
                    "must be seconds or an RFC 3339 string".into(),
                ));
            }
        };
        times.push(parse_time(&time).map_err(|m| jerr(format!("point {i}.time"), m))?);
        let values = p.get("values").and_then(Json::as_object);
        let row = columns
            .iter()
            .map(|c| match values.and_then(|v| v.get(c)) {
                None | Some(Json::Null) => Ok(Cell::Error),
                Some(Json::Number(n)) => n
                    .as_f64()
                    .filter(|v| v.is_finite())
                    .map(Cell::Value)
                    .ok_or_else(|| jerr(format!("point {i}.values.{c}"), "not a finite number".into())),
                Some(Json::String(s)) => parse_cell(s).map_err(|m| jerr(format!("point {i}.values.{c}"), m)),
                Some(_) => Err(jerr(
                    format!("point {i}.values.{c}"),
                    "must be a number, null or \"error\"".into(),
                )),
            })
            .collect::<Result<Vec<_>, _>>()?;
        cells.push(row);
    }
    if cells.is_empty() {
        return Err(InputError::Empty);
    }
    if columns.is_empty() {
        return Err(jerr("the document".into(), "no point has a value".into()));
    }
    let (times_ms, start) = times_ms(&times, |i| (i, format!("of point {i}")))
        .map_err(|(i, m)| jerr(format!("point {i}.time"), m))?;
    Ok(Series {
        columns,
        times_ms,
        cells,
        start,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn csv_with_seconds_errors_and_gaps() {
        let s = parse_csv("# comment\ntime,lag,b\n0,0,1\n1.5,12,error\n\n3,,2\n").unwrap();
        assert_eq!(s.columns, ["lag", "b"]);
        assert_eq!(s.times_ms, [0, 1500, 3000]);
        assert_eq!(s.cells[1], [Cell::Value(12.0), Cell::Error]);
        assert_eq!(s.cells[2], [Cell::Error, Cell::Value(2.0)]);
        assert_eq!(s.at(2999), &[Cell::Value(12.0), Cell::Error]);
        assert_eq!(s.at(-5), &[Cell::Value(0.0), Cell::Value(1.0)]);
        assert_eq!(s.at(1_000_000)[1], Cell::Value(2.0));
        assert_eq!(s.start, None);
    }

    #[test]
    fn csv_with_timestamps() {
        let s = parse_csv("time,q\n2026-01-01T00:00:00Z,1\n2026-01-01T00:00:02.5Z,2\n").unwrap();
        assert_eq!(s.times_ms, [0, 2500]);
        assert!(s.start.is_some());
    }

    #[test]
    fn csv_errors_name_line_and_column() {
        let e = parse_csv("time,q\n0,1\n1,x\n").unwrap_err();
        assert!(
            matches!(
                e,
                InputError::Csv {
                    line: 3,
                    column: 2,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_csv("time,q\n0,1\n0,2\n").unwrap_err();
        assert!(
            matches!(
                e,
                InputError::Csv {
                    line: 3,
                    column: 1,
                    ..
                }
            ),
            "{e}"
        );
        let e = parse_csv("time,q\n0,1,2\n").unwrap_err();
        assert_eq!(e.to_string(), "line 2, column 3: 3 fields, the header has 2");
        let e = parse_csv("when,q\n").unwrap_err();
        assert!(matches!(
            e,
            InputError::Csv {
                line: 1,
                column: 1,
                ..
            }
        ));
        assert_eq!(parse_csv("time,q\n").unwrap_err(), InputError::Empty);
        let e = parse_csv("time,q\n0,1\n2026-01-01T00:00:00Z,1\n").unwrap_err();
        assert!(e.to_string().contains("mix"), "{e}");
        let e = parse_csv("time,q,q\n").unwrap_err();
        assert!(e.to_string().contains("twice"), "{e}");
        assert!(parse_csv("time,q\ninf,1\n").is_err());
        assert!(parse_csv("time,q\n0,NaN\n").is_err());
    }

    #[test]
    fn json_points_missing_values_fail() {
        let s = parse_json(
            r#"[{"time": 0, "values": {"a": 1}}, {"time": 2, "values": {"a": "error", "b": 3}},
                {"time": "4", "values": {"b": null}}]"#,
        )
        .unwrap();
        assert_eq!(s.columns, ["a", "b"]);
        assert_eq!(s.cells[0], [Cell::Value(1.0), Cell::Error]);
        assert_eq!(s.cells[1], [Cell::Error, Cell::Value(3.0)]);
        assert_eq!(s.cells[2], [Cell::Error, Cell::Error]);
        let e = parse_json(r#"[{"time": 0, "values": {"a": true}}]"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            "point 0.values.a: must be a number, null or \"error\""
        );
        let e = parse_json(r#"[{"time": 1, "values": {"a": 1}}, {"time": 1, "values": {}}]"#).unwrap_err();
        assert!(e.to_string().starts_with("point 1.time"), "{e}");
        assert!(parse_json("[1,").unwrap_err().to_string().starts_with("line 1"));
        assert_eq!(parse_series("[]").unwrap_err(), InputError::Empty);
    }

    #[test]
    fn too_many_points_is_an_error() {
        let mut text = String::from("time,q\n");
        for i in 0..=MAX_POINTS {
            text.push_str(&format!("{i},1\n"));
        }
        let e = parse_csv(&text).unwrap_err();
        assert!(e.to_string().contains("more than"), "{e}");
    }

    proptest! {
        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
            let _ = parse_series(&text);
            let _ = parse_csv(&format!("time,a\n{text}"));
            let _ = parse_json(&format!("[{text}]"));
        }
    }
}
