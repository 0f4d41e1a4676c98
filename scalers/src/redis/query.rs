//! What one trigger reads ([`Query`]): the commands it adds to its connection's pipeline, and
//! its value from their replies ([`Query::value`]). Pure.
//!
//! - List length (`redis`): as KEDA, the key's size whatever collection it is: a list's `LLEN`,
//!   a set's `SCARD`, a sorted set's `ZCARD`, a hash's `HLEN`, 0 for a missing key; any other
//!   type is an error. One `EVAL` of a short script, so it still takes one command.
//! - Stream length (`redis-streams` without `consumerGroup`): `XLEN` (0 for a missing key).
//! - Pending entries (`consumerGroup`, no `lagCount`): the count of `XPENDING <stream> <group>`,
//!   with `EXISTS <stream>` so that a missing stream is 0 (a missing group is an error).
//! - Lag (`consumerGroup` and `lagCount`): the group's `lag` from `XINFO GROUPS` (Redis 7+),
//!   with `XLEN` for when the group does not exist yet or Redis cannot tell the lag (then the
//!   stream's length, an upper bound); a missing stream is 0.

use super::resp::{Command, Reply, command};

/// The script that counts the members of a list, set, sorted set or hash (0 when missing).
const LENGTH_SCRIPT: &str = "local t = redis.call('TYPE', KEYS[1])['ok'] \
if t == 'list' or t == 'none' then return redis.call('LLEN', KEYS[1]) end \
if t == 'set' then return redis.call('SCARD', KEYS[1]) end \
if t == 'zset' then return redis.call('ZCARD', KEYS[1]) end \
if t == 'hash' then return redis.call('HLEN', KEYS[1]) end \
return redis.error_reply('WRONGTYPE the key holds a ' .. t .. ', not a list, set, sorted set or hash')";

/// What one trigger reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Query {
    /// The number of members of a list (or set, sorted set, hash).
    ListLength {
        /// The key.
        key: String,
    },
    /// The number of entries of a stream.
    StreamLength {
        /// The stream's key.
        stream: String,
    },
    /// The number of entries delivered to a consumer group and not yet acknowledged.
    Pending {
        /// The stream's key.
        stream: String,
        /// The consumer group.
        group: String,
    },
    /// The number of entries not yet delivered to a consumer group.
    Lag {
        /// The stream's key.
        stream: String,
        /// The consumer group.
        group: String,
    },
}

/// Why the replies give no value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The server answered with an error (its code first, e.g. `WRONGTYPE`, `NOGROUP`,
    /// `NOPERM`).
    #[error("{0}")]
    Server(String),
    /// The reply is not what the command returns.
    #[error("unexpected reply to {0}")]
    Unexpected(&'static str),
    /// `XINFO GROUPS` gives no `lag` (Redis before 7).
    #[error("XINFO GROUPS gives no lag: lagCount needs Redis 7 or later")]
    NoLag,
}

impl QueryError {
    /// Whether the server refused the credentials or the command (`NOAUTH`, `WRONGPASS`,
    /// `NOPERM`).
    pub fn is_denied(&self) -> bool {
        match self {
            QueryError::Server(line) => {
                let code = line.split_whitespace().next().unwrap_or("");
                matches!(code, "NOAUTH" | "WRONGPASS" | "NOPERM")
            }
            _ => false,
        }
    }
}

/// An error reply's text, cut to a readable length.
fn server_error(line: &str) -> QueryError {
    let mut text: String = line.chars().take(300).collect();
    if text.len() < line.len() {
        text.push('…');
    }
    QueryError::Server(text)
}

fn int(reply: &Reply, what: &'static str) -> Result<i64, QueryError> {
    match reply {
        Reply::Int(n) => Ok(*n),
        Reply::Error(line) => Err(server_error(line)),
        _ => Err(QueryError::Unexpected(what)),
    }
}

impl Query {
    /// The commands the query adds to its connection's pipeline.
    pub fn commands(&self) -> Vec<Command> {
        match self {
            Query::ListLength { key } => {
                vec![command([b"EVAL", LENGTH_SCRIPT.as_bytes(), b"1", key.as_bytes()])]
            }
            Query::StreamLength { stream } => vec![command([b"XLEN", stream.as_bytes()])],
            Query::Pending { stream, group } => vec![
                command([b"EXISTS", stream.as_bytes()]),
                command([b"XPENDING", stream.as_bytes(), group.as_bytes()]),
            ],
            Query::Lag { stream, group: _ } => vec![
                command([b"XINFO", b"GROUPS", stream.as_bytes()]),
                command([b"XLEN", stream.as_bytes()]),
            ],
        }
    }

    /// How many commands (and so replies) the query takes.
    pub fn command_count(&self) -> usize {
        match self {
            Query::ListLength { .. } | Query::StreamLength { .. } => 1,
            Query::Pending { .. } | Query::Lag { .. } => 2,
        }
    }

    /// The key the query reads (for messages).
    pub fn key(&self) -> &str {
        match self {
            Query::ListLength { key } => key,
            Query::StreamLength { stream } | Query::Pending { stream, .. } | Query::Lag { stream, .. } => {
                stream
            }
        }
    }

    /// The value from the replies to [`Self::commands`], in order.
    pub fn value(&self, replies: &[Reply]) -> Result<f64, QueryError> {
        if replies.len() != self.command_count() {
            return Err(QueryError::Unexpected("the pipeline (wrong number of replies)"));
        }
        let n = match self {
            Query::ListLength { .. } => int(&replies[0], "EVAL")?,
            Query::StreamLength { .. } => int(&replies[0], "XLEN")?,
            Query::Pending { .. } => {
                if int(&replies[0], "EXISTS")? == 0 {
                    0
                } else {
                    pending_count(&replies[1])?
                }
            }
            Query::Lag { group, .. } => lag(group, &replies[0], &replies[1])?,
        };
        Ok(n.max(0) as f64)
    }
}

/// The count of `XPENDING`'s summary: `[count, smallest id, greatest id, consumers]`.
fn pending_count(reply: &Reply) -> Result<i64, QueryError> {
    match reply {
        Reply::Array(items) => match items.first() {
            Some(Reply::Int(n)) => Ok(*n),
            _ => Err(QueryError::Unexpected("XPENDING")),
        },
        Reply::Error(line) => Err(server_error(line)),
        _ => Err(QueryError::Unexpected("XPENDING")),
    }
}

/// The group's lag from `XINFO GROUPS` (each group a flat list of field, value), the stream's
/// length when the group is missing or its lag unknown, 0 when the stream is missing.
fn lag(group: &str, groups: &Reply, xlen: &Reply) -> Result<i64, QueryError> {
    let groups = match groups {
        Reply::Array(groups) => groups,
        Reply::Error(line) if line.starts_with("ERR no such key") => return Ok(0),
        Reply::Error(line) => return Err(server_error(line)),
        _ => return Err(QueryError::Unexpected("XINFO GROUPS")),
    };
    for entry in groups {
        let Reply::Array(fields) = entry else {
            return Err(QueryError::Unexpected("XINFO GROUPS"));
        };
        let field = |name: &str| {
            fields
                .chunks_exact(2)
                .find(|kv| kv[0].text().as_deref() == Some(name))
                .map(|kv| &kv[1])
        };
        if field("name").and_then(Reply::text).as_deref() != Some(group) {
            continue;
        }
        return match field("lag") {
            Some(Reply::Int(n)) => Ok(*n),
            // Redis cannot tell (entries deleted past the group's position): the stream's
            // length bounds the lag from above.
            Some(Reply::Nil) => int(xlen, "XLEN"),
            Some(_) => Err(QueryError::Unexpected("XINFO GROUPS")),
            None => Err(QueryError::NoLag),
        };
    }
    // The group does not exist yet (its consumers create it): every entry is still to be read.
    int(xlen, "XLEN")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn group(name: &str, lag: Option<Reply>) -> Reply {
        let mut fields = vec![bulk("name"), bulk(name), bulk("consumers"), Reply::Int(0)];
        if let Some(lag) = lag {
            fields.extend([bulk("lag"), lag]);
        }
        Reply::Array(fields)
    }

    fn lag_query() -> Query {
        Query::Lag {
            stream: "s".into(),
            group: "g".into(),
        }
    }

    #[test]
    fn commands_match_their_reply_count() {
        for q in [
            Query::ListLength { key: "k".into() },
            Query::StreamLength { stream: "s".into() },
            Query::Pending {
                stream: "s".into(),
                group: "g".into(),
            },
            lag_query(),
        ] {
            assert_eq!(q.commands().len(), q.command_count(), "{q:?}");
            assert_eq!(q.key(), if q.commands()[0][0] == b"EVAL" { "k" } else { "s" });
        }
        let eval = &Query::ListLength { key: "jobs".into() }.commands()[0];
        assert_eq!(
            (eval[2].as_slice(), eval[3].as_slice()),
            (&b"1"[..], &b"jobs"[..])
        );
    }

    #[test]
    fn lengths_and_errors() {
        let list = Query::ListLength { key: "k".into() };
        assert_eq!(list.value(&[Reply::Int(7)]), Ok(7.0));
        let wrong = list.value(&[Reply::Error("WRONGTYPE the key holds a string".into())]);
        assert_eq!(
            wrong,
            Err(QueryError::Server("WRONGTYPE the key holds a string".into()))
        );
        assert!(!wrong.unwrap_err().is_denied());
        let denied = list.value(&[Reply::Error("NOPERM this user has no permissions".into())]);
        assert!(denied.unwrap_err().is_denied());
        assert_eq!(list.value(&[Reply::Nil]), Err(QueryError::Unexpected("EVAL")));
        assert!(list.value(&[]).is_err());
        let long = "E".repeat(1000);
        let Err(QueryError::Server(cut)) = list.value(&[Reply::Error(long)]) else {
            panic!("an error")
        };
        assert!(cut.chars().count() == 301 && cut.ends_with('…'));
        let xlen = Query::StreamLength { stream: "s".into() };
        assert_eq!(xlen.value(&[Reply::Int(0)]), Ok(0.0));
    }

    #[test]
    fn pending_counts_and_a_missing_stream_is_zero() {
        let q = Query::Pending {
            stream: "s".into(),
            group: "g".into(),
        };
        let summary = Reply::Array(vec![
            Reply::Int(4),
            bulk("1-0"),
            bulk("4-0"),
            Reply::Array(vec![]),
        ]);
        assert_eq!(q.value(&[Reply::Int(1), summary]), Ok(4.0));
        let nogroup = Reply::Error("NOGROUP No such key 's' or consumer group 'g'".into());
        assert_eq!(q.value(&[Reply::Int(0), nogroup.clone()]), Ok(0.0));
        assert!(
            matches!(q.value(&[Reply::Int(1), nogroup]), Err(QueryError::Server(m)) if m.starts_with("NOGROUP"))
        );
        assert_eq!(
            q.value(&[Reply::Int(1), Reply::Int(3)]),
            Err(QueryError::Unexpected("XPENDING"))
        );
    }

    #[test]
    fn lag_of_the_group_or_the_stream_length() {
        let q = lag_query();
        let groups = |gs: Vec<Reply>| Reply::Array(gs);
        let xlen = Reply::Int(9);
        // The group's lag, not another group's.
        let both = groups(vec![
            group("other", Some(Reply::Int(1))),
            group("g", Some(Reply::Int(3))),
        ]);
        assert_eq!(q.value(&[both, xlen.clone()]), Ok(3.0));
        // Lag unknown: the stream's length.
        assert_eq!(
            q.value(&[groups(vec![group("g", Some(Reply::Nil))]), xlen.clone()]),
            Ok(9.0)
        );
        // No such group yet: the stream's length.
        assert_eq!(
            q.value(&[groups(vec![group("other", Some(Reply::Int(1)))]), xlen.clone()]),
            Ok(9.0)
        );
        assert_eq!(q.value(&[groups(vec![]), xlen.clone()]), Ok(9.0));
        // No such stream: 0.
        assert_eq!(
            q.value(&[Reply::Error("ERR no such key".into()), Reply::Int(0)]),
            Ok(0.0)
        );
        // Redis 6: no lag field.
        assert_eq!(
            q.value(&[groups(vec![group("g", None)]), xlen.clone()]),
            Err(QueryError::NoLag)
        );
        // Wrong type, and a fallback that fails.
        let wrongtype =
            Reply::Error("WRONGTYPE Operation against a key holding the wrong kind of value".into());
        assert!(q.value(&[wrongtype.clone(), wrongtype.clone()]).is_err());
        assert!(q.value(&[groups(vec![]), wrongtype]).is_err());
        assert_eq!(
            q.value(&[groups(vec![Reply::Int(1)]), xlen]),
            Err(QueryError::Unexpected("XINFO GROUPS"))
        );
    }
}
