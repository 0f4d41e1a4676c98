//! The Redis wire protocol (RESP2) as far as the redis scalers need it: commands encoded as arrays
//! of bulk strings ([`encode`]), and replies decoded from a byte buffer ([`decode`]) with every
//! size bounded ([`Limits`]), so that a server (or something posing as one) cannot make ebb
//! allocate more than a few hundred KiB per reply.
//!
//! Pure: the connection (`connection.rs`) owns the socket and calls these on its buffer.

/// One command: its arguments, the command name first.
pub type Command = Vec<Vec<u8>>;

/// A command from its arguments.
pub fn command<const N: usize>(args: [&[u8]; N]) -> Command {
    args.iter().map(|a| a.to_vec()).collect()
}

/// One decoded reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Simple(String),
    /// `-ERR ...`: the server's error line (its first word is the error code, e.g. `WRONGTYPE`).
    Error(String),
    /// `:42`.
    Int(i64),
    /// `$n` followed by n bytes.
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`.
    Nil,
    /// `*n` followed by n replies.
    Array(Vec<Reply>),
}

impl Reply {
    /// The error code of an error reply (`WRONGTYPE`, `NOAUTH`, …).
    pub fn error_code(&self) -> Option<&str> {
        match self {
            Reply::Error(line) => line.split_whitespace().next(),
            _ => None,
        }
    }

    /// The text of a simple string or a bulk string (lossy UTF-8).
    pub fn text(&self) -> Option<String> {
        match self {
            Reply::Simple(s) => Some(s.clone()),
            Reply::Bulk(b) => Some(String::from_utf8_lossy(b).into_owned()),
            _ => None,
        }
    }
}

/// The bounds of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest bulk string.
    pub max_bulk: usize,
    /// The most elements of one array.
    pub max_array: usize,
    /// The deepest nesting of arrays.
    pub max_depth: usize,
    /// The most bytes one whole reply may take on the wire.
    pub max_reply: usize,
}

impl Limits {
    /// The bounds the scalers use: replies are integers, short arrays (XPENDING's summary,
    /// XINFO GROUPS) and names.
    pub const DEFAULT: Limits = Limits {
        max_bulk: 64 * 1024,
        max_array: 16 * 1024,
        max_depth: 4,
        max_reply: 512 * 1024,
    };
}

/// Why bytes are not a reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not RESP (an unknown type byte, a bad length or number).
    #[error("not a Redis reply: {0}")]
    Malformed(&'static str),
    /// A reply above one of the [`Limits`].
    #[error("reply too large: {0}")]
    TooLarge(&'static str),
}

/// Appends `cmd` to `out` as a RESP array of bulk strings.
pub fn encode(cmd: &Command, out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", cmd.len()).as_bytes());
    for arg in cmd {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Decodes the first reply of `buf`: `Ok(Some((reply, bytes used)))`, `Ok(None)` when `buf`
/// holds only part of it (read more), or an error (the connection is then unusable).
pub fn decode(buf: &[u8], limits: &Limits) -> Result<Option<(Reply, usize)>, DecodeError> {
    let mut at = 0;
    let found = decode_at(buf, &mut at, limits, 0)?;
    if found.is_none() && buf.len() > limits.max_reply {
        return Err(DecodeError::TooLarge("more bytes than a reply may take"));
    }
    Ok(found.map(|reply| (reply, at)))
}

/// The line starting at `*at` (without CRLF), advancing past it; `None` when incomplete.
fn line<'a>(buf: &'a [u8], at: &mut usize, limits: &Limits) -> Result<Option<&'a [u8]>, DecodeError> {
    let rest = &buf[*at..];
    match rest.windows(2).position(|w| w == b"\r\n") {
        Some(end) if end > limits.max_bulk => Err(DecodeError::TooLarge("line")),
        Some(end) => {
            *at += end + 2;
            Ok(Some(&rest[..end]))
        }
        None if rest.len() > limits.max_bulk + 2 => Err(DecodeError::TooLarge("line")),
        None => Ok(None),
    }
}

fn number(bytes: &[u8]) -> Result<i64, DecodeError> {
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or(DecodeError::Malformed("bad number"))
}

fn decode_at(
    buf: &[u8],
    at: &mut usize,
    limits: &Limits,
    depth: usize,
) -> Result<Option<Reply>, DecodeError> {
    if *at >= buf.len() {
        return Ok(None);
    }
    let kind = buf[*at];
    *at += 1;
    let Some(head) = line(buf, at, limits)? else {
        return Ok(None);
    };
    let text = || String::from_utf8_lossy(head).into_owned();
    match kind {
        b'+' => Ok(Some(Reply::Simple(text()))),
        b'-' => Ok(Some(Reply::Error(text()))),
        b':' => Ok(Some(Reply::Int(number(head)?))),
        b'$' => {
            let len = number(head)?;
            if len == -1 {
                return Ok(Some(Reply::Nil));
            }
            let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("bad bulk length"))?;
            if len > limits.max_bulk {
                return Err(DecodeError::TooLarge("bulk string"));
            }
            if buf.len() < *at + len + 2 {
                return Ok(None);
            }
            if &buf[*at + len..*at + len + 2] != b"\r\n" {
                return Err(DecodeError::Malformed("bulk string not ended by CRLF"));
            }
            let bytes = buf[*at..*at + len].to_vec();
            *at += len + 2;
            Ok(Some(Reply::Bulk(bytes)))
        }
        b'*' => {
            let len = number(head)?;
            if len == -1 {
                return Ok(Some(Reply::Nil));
            }
            let len = usize::try_from(len).map_err(|_| DecodeError::Malformed("bad array length"))?;
            if len > limits.max_array {
                return Err(DecodeError::TooLarge("array"));
            }
            if depth >= limits.max_depth {
                return Err(DecodeError::TooLarge("arrays nested too deep"));
            }
            let mut items = Vec::with_capacity(len.min(64));
            for _ in 0..len {
                match decode_at(buf, at, limits, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            Ok(Some(Reply::Array(items)))
        }
        _ => Err(DecodeError::Malformed("unknown reply type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(bytes: &[u8]) -> Result<Option<(Reply, usize)>, DecodeError> {
        decode(bytes, &Limits::DEFAULT)
    }

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&command([b"LLEN", b"my list"]), &mut out);
        encode(&command([b"PING"]), &mut out);
        assert_eq!(out, b"*2\r\n$4\r\nLLEN\r\n$7\r\nmy list\r\n*1\r\n$4\r\nPING\r\n");
    }

    #[test]
    fn decodes_every_reply_type_and_says_how_much_it_used() {
        assert_eq!(
            one(b"+OK\r\n:1\r\n").unwrap(),
            Some((Reply::Simple("OK".into()), 5))
        );
        assert_eq!(one(b":-12\r\n").unwrap(), Some((Reply::Int(-12), 6)));
        let e = one(b"-WRONGTYPE Operation against a key\r\n").unwrap().unwrap().0;
        assert_eq!(e.error_code(), Some("WRONGTYPE"));
        assert_eq!(
            one(b"$3\r\na\r\n\r\n").unwrap(),
            Some((Reply::Bulk(b"a\r\n".to_vec()), 9))
        );
        assert_eq!(one(b"$-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        assert_eq!(one(b"*-1\r\n").unwrap(), Some((Reply::Nil, 5)));
        let nested = b"*2\r\n:3\r\n*2\r\n$1\r\nc\r\n$-1\r\n";
        assert_eq!(
            one(nested).unwrap(),
            Some((
                Reply::Array(vec![
                    Reply::Int(3),
                    Reply::Array(vec![Reply::Bulk(b"c".to_vec()), Reply::Nil])
                ]),
                nested.len()
            ))
        );
    }

    #[test]
    fn a_partial_reply_asks_for_more() {
        let full = b"*2\r\n$5\r\nhello\r\n:7\r\n";
        for cut in 0..full.len() {
            assert_eq!(one(&full[..cut]).unwrap(), None, "cut at {cut}");
        }
        assert!(one(full).unwrap().is_some());
    }

    #[test]
    fn malformed_and_oversized_replies_are_errors() {
        assert!(matches!(one(b"?x\r\n"), Err(DecodeError::Malformed(_))));
        assert!(matches!(one(b":12a\r\n"), Err(DecodeError::Malformed(_))));
        assert!(matches!(one(b"$-2\r\n"), Err(DecodeError::Malformed(_))));
        assert!(matches!(one(b"$1\r\nab\r\n"), Err(DecodeError::Malformed(_))));
        let limits = Limits {
            max_bulk: 8,
            max_array: 2,
            max_depth: 2,
            max_reply: 64,
        };
        let small = |b: &[u8]| decode(b, &limits);
        assert_eq!(small(b"$9\r\n"), Err(DecodeError::TooLarge("bulk string")));
        assert_eq!(small(b"*3\r\n"), Err(DecodeError::TooLarge("array")));
        assert_eq!(
            small(b"*1\r\n*1\r\n*1\r\n:1\r\n"),
            Err(DecodeError::TooLarge("arrays nested too deep"))
        );
        // A line that never ends is cut off at the bulk limit, not read forever.
        assert_eq!(small(b"+aaaaaaaaaaaaaaa"), Err(DecodeError::TooLarge("line")));
        // Many small parts: the whole reply's size is bounded too.
        let tight = Limits {
            max_reply: 20,
            ..limits
        };
        assert_eq!(
            decode(b"*2\r\n$8\r\n12345678\r\n$8\r\n123", &tight),
            Err(DecodeError::TooLarge("more bytes than a reply may take"))
        );
    }
}
