//! Reading one size-prefixed Kafka response frame, bounded: the size is checked against
//! [`MAX_FRAME_BYTES`] before anything else is read, reserved from the process-wide in-flight
//! [`ByteBudget`], and the buffer grows with the bytes that actually arrive (a broker that
//! announces a large frame and sends nothing costs nothing).

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt as _};

use super::wire::WireError;
use crate::common::budget::{ByteBudget, Reservation};

/// The largest response frame accepted: 16 MiB (Kafka's own `socket.request.max.bytes` default,
/// 100 MiB, bounds requests to a broker, not what a client must accept).
///
/// ebb asks only for ApiVersions, SASL, FindCoordinator, Metadata of the watched topics,
/// ListOffsets of their partitions and OffsetFetch of the watched groups. The largest real
/// answers are:
/// - Metadata: about 40 bytes a partition with three replicas, plus the topic name and a few
///   bytes a broker: 10,000 watched partitions are under 0.5 MiB;
/// - ListOffsets: about 30 bytes a partition;
/// - OffsetFetch: about 30 bytes a committed partition per group, plus the commit's metadata
///   string (usually empty, at most `offset.metadata.max.bytes`, 4 KiB by default).
///
/// So 16 MiB holds some 400,000 partitions' answers, or 4,000 committed partitions with
/// full-size commit metadata, in one response; a larger frame is a protocol error, not memory.
pub const MAX_FRAME_BYTES: usize = 16 * 1024 * 1024;

/// A response frame (after its size prefix), holding its bytes' reservation of the in-flight
/// budget until dropped.
#[derive(Debug)]
pub struct Frame {
    /// The frame.
    pub bytes: Bytes,
    _reservation: Reservation,
}

/// How many bytes are read at a time while a frame arrives.
const READ_CHUNK: usize = 16 * 1024;

/// Reads one frame: its `i32` size (4 to `max` bytes, else [`WireError::Protocol`]), a
/// reservation of that size from `budget` (else [`WireError::Overloaded`], at once), then the
/// frame itself, its buffer growing with what arrives.
pub async fn read_frame<R: AsyncRead + Unpin + ?Sized>(
    io: &mut R,
    max: usize,
    budget: &ByteBudget,
) -> Result<Frame, WireError> {
    let io_error = |e: std::io::Error| WireError::Io(e.to_string());
    let size = io.read_i32().await.map_err(io_error)?;
    let size = usize::try_from(size)
        .ok()
        .filter(|s| *s >= 4 && *s <= max)
        .ok_or_else(|| {
            WireError::Protocol(format!("bad response size {size} (ebb accepts 4 to {max} bytes)"))
        })?;
    let reservation = budget
        .try_reserve(size)
        .map_err(|e| WireError::Overloaded(e.to_string()))?;
    let mut frame: Vec<u8> = Vec::with_capacity(size.min(READ_CHUNK));
    let mut chunk = [0u8; READ_CHUNK];
    while frame.len() < size {
        let want = (size - frame.len()).min(READ_CHUNK);
        let n = io.read(&mut chunk[..want]).await.map_err(io_error)?;
        if n == 0 {
            return Err(WireError::Io(format!(
                "connection closed after {} of a {size}-byte response",
                frame.len()
            )));
        }
        if frame.len() + n > frame.capacity() {
            let target = frame.capacity().saturating_mul(2).max(frame.len() + n).min(size);
            frame.reserve_exact(target - frame.len());
        }
        frame.extend_from_slice(&chunk[..n]);
    }
    Ok(Frame {
        bytes: Bytes::from(frame),
        _reservation: reservation,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(size: i32, body: &[u8]) -> Vec<u8> {
        let mut out = size.to_be_bytes().to_vec();
        out.extend_from_slice(body);
        out
    }

    #[tokio::test]
    async fn frames_are_read_whole_within_the_cap() {
        let budget = ByteBudget::new(1024);
        let wire = framed(6, b"abcdef");
        let frame = read_frame(&mut wire.as_slice(), 64, &budget).await.unwrap();
        assert_eq!(&frame.bytes[..], b"abcdef");
        assert_eq!(budget.free(), 1024 - 6, "reserved while the frame lives");
        drop(frame);
        assert_eq!(budget.free(), 1024);
    }

    #[tokio::test]
    async fn an_oversized_frame_is_refused_before_it_is_read() {
        let budget = ByteBudget::new(u32::MAX as usize);
        // A 17 MiB announcement: refused on its size, nothing allocated or reserved.
        let announced: i32 = 17 * 1024 * 1024;
        let wire = framed(announced, b"xx");
        let e = read_frame(&mut wire.as_slice(), MAX_FRAME_BYTES, &budget)
            .await
            .unwrap_err();
        assert!(matches!(e, WireError::Protocol(_)), "{e}");
        assert!(e.to_string().contains("bad response size"), "{e}");
        assert_eq!(budget.free(), budget.total());
        for size in [-1, 0, 3] {
            let wire = framed(size, b"");
            assert!(read_frame(&mut wire.as_slice(), 64, &budget).await.is_err());
        }
    }

    #[tokio::test]
    async fn an_exhausted_budget_fails_fast_and_a_short_frame_is_an_error() {
        let budget = ByteBudget::new(100);
        let _held = budget.try_reserve(90).unwrap();
        let wire = framed(20, &[0; 20]);
        let e = read_frame(&mut wire.as_slice(), 64, &budget).await.unwrap_err();
        assert!(matches!(e, WireError::Overloaded(_)), "{e}");
        assert!(e.to_string().contains("budget is exhausted"), "{e}");
        // A frame announced at 8 bytes, of which 3 arrive before the connection closes.
        let budget = ByteBudget::new(100);
        let wire = framed(8, b"abc");
        let e = read_frame(&mut wire.as_slice(), 64, &budget).await.unwrap_err();
        assert!(e.to_string().contains("after 3 of a 8-byte response"), "{e}");
        assert_eq!(budget.free(), 100, "the reservation is given back on error");
    }
}
