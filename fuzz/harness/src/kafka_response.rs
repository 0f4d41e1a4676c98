//! Kafka broker responses: every response type ebb reads, at every version `kafka-protocol`
//! speaks, decoded the way a [`Connection`](ebb_scalers::kafka::wire::Connection) decodes an
//! answer (header, correlation id, body), and the frame reader over the same bytes.
//!
//! Input: byte 0 picks the response type, byte 1 the version, the rest is the frame (the bytes
//! after the size prefix: response header, then body); its first four bytes are taken as the
//! expected correlation id unless byte 0 has its high bit set.
//!
//! Invariants: no panic and no unbounded allocation (libFuzzer's malloc limit); a malformed frame
//! is a [`WireError::Protocol`]; a decoded response re-encodes, and (unless it holds an unknown
//! tagged field numbered 2^31 or more, which `kafka-protocol` drops) to bytes that decode to the
//! same response; the frame reader returns at once over an in-memory stream and never
//! returns more bytes than it was sent or than its cap.

use std::fmt::Debug;
use std::future::Future as _;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use ebb_scalers::common::budget::ByteBudget;
use ebb_scalers::kafka::frame::read_frame;
use ebb_scalers::kafka::wire::{WireError, decode_response};
use kafka_protocol::messages::{
    ApiVersionsRequest, FindCoordinatorRequest, ListOffsetsRequest, MetadataRequest, OffsetFetchRequest,
    ResponseHeader, SaslAuthenticateRequest, SaslHandshakeRequest,
};
use kafka_protocol::protocol::{Encodable as _, HeaderVersion, Message, Request};

/// The response types ebb reads, in the order byte 0 picks them.
pub const RESPONSES: [&str; 7] = [
    "ApiVersions",
    "SaslHandshake",
    "SaslAuthenticate",
    "FindCoordinator",
    "Metadata",
    "ListOffsets",
    "OffsetFetch",
];

/// The frame cap the frame reader is run with here (ebb's is 16 MiB).
const FRAME_CAP: usize = 64 * 1024;

/// Runs one input.
pub fn run(data: &[u8]) {
    decodes(data);
}

/// Runs one input; whether its frame decoded as the response it picks (so the round-trip
/// checks ran).
pub fn decodes(data: &[u8]) -> bool {
    let [pick, version, frame @ ..] = data else {
        return false;
    };
    let mismatched = pick & 0x80 != 0;
    let decoded = match usize::from(pick & 0x7f) % RESPONSES.len() {
        0 => decode::<ApiVersionsRequest>(*version, frame, mismatched),
        1 => decode::<SaslHandshakeRequest>(*version, frame, mismatched),
        2 => decode::<SaslAuthenticateRequest>(*version, frame, mismatched),
        3 => decode::<FindCoordinatorRequest>(*version, frame, mismatched),
        4 => decode::<MetadataRequest>(*version, frame, mismatched),
        5 => decode::<ListOffsetsRequest>(*version, frame, mismatched),
        _ => decode::<OffsetFetchRequest>(*version, frame, mismatched),
    };
    read_one_frame(frame);
    decoded
}

/// The version byte `pick` selects among those `R`'s response has.
pub fn version_of<R: Request>(pick: u8) -> i16 {
    let range = <R::Response as Message>::VERSIONS;
    let span = i32::from(range.max) - i32::from(range.min) + 1;
    let offset = i32::from(pick) % span.max(1);
    i16::try_from(i32::from(range.min) + offset).unwrap_or(range.min)
}

fn decode<R: Request>(pick: u8, frame: &[u8], mismatched: bool) -> bool
where
    R::Response: PartialEq + Debug,
{
    let version = version_of::<R>(pick);
    let announced = frame
        .get(..4)
        .map_or(0, |b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let correlation = if mismatched {
        announced.wrapping_add(1)
    } else {
        announced
    };
    let response = match decode_response::<R>(Bytes::copy_from_slice(frame), version, correlation) {
        Ok(response) => response,
        Err(WireError::Protocol(_)) => return false,
        Err(other) => panic!("a bad frame must be a protocol error, not {other:?}"),
    };
    assert!(!mismatched, "a response to another request was accepted");

    let header = ResponseHeader::default().with_correlation_id(correlation);
    let header_version = <R::Response as HeaderVersion>::header_version(version);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, header_version)
        .expect("a response header re-encodes");
    let header_len = buf.len();
    response
        .encode(&mut buf, version)
        .expect("a decoded response re-encodes");
    let size = response
        .compute_size(version)
        .expect("a decoded response has a size");
    if size != buf.len() - header_len {
        // kafka-protocol 0.18 decodes an unknown tagged field numbered 2^31 or more under a
        // negative tag, counts it in `compute_size` and leaves it out of `encode` (fuzz/README.md,
        // Findings). ebb never re-encodes a response; nothing more to compare.
        return true;
    }
    let again =
        decode_response::<R>(buf.freeze(), version, correlation).expect("a re-encoded response decodes");
    assert_eq!(again, response, "decode → encode → decode changes the response");
    true
}

/// The frame reader over `stream` (size prefix, then frame), with a 64 KiB cap and budget.
fn read_one_frame(stream: &[u8]) {
    let budget = ByteBudget::new(FRAME_CAP);
    let mut io = stream;
    let mut future = pin!(read_frame(&mut io, FRAME_CAP, &budget));
    let Poll::Ready(result) = future.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("reading a frame from memory must not wait");
    };
    if let Ok(frame) = result {
        assert!(frame.bytes.len() >= 4 && frame.bytes.len() <= FRAME_CAP);
        assert_eq!(&frame.bytes[..], &stream[4..4 + frame.bytes.len()]);
        assert_eq!(budget.free(), FRAME_CAP - frame.bytes.len());
    }
}
