//! The Pegasus wire format: one UDP datagram per message, a fixed 40-byte header right after
//! the UDP header (so that a switch parses it at a fixed offset), then the body.
//!
//! Header (all integers big-endian):
//!
//! | off | size | field          |
//! |-----|------|----------------|
//! | 0   | 2    | magic 0x5047   |
//! | 2   | 1    | proto version  |
//! | 3   | 1    | op             |
//! | 4   | 8    | keyhash        |
//! | 12  | 8    | version        |
//! | 20  | 4    | request id     |
//! | 24  | 2    | client id      |
//! | 26  | 1    | server id      |
//! | 27  | 1    | flags          |
//! | 28  | 8    | replica bitmap |
//! | 36  | 2    | load           |
//! | 38  | 2    | status         |
//!
//! Body: key length (u16), key bytes, value length (u16), value bytes; then, in a CHAIN_PUT
//! only, the client's address ([`ReplyTo`], 6 bytes); nothing after.
//! `docs/protocol.md` is the full specification; this module is its implementation.
//! Decoding never panics: every malformed input is an error value.

use crate::hash::key_hash;

/// "PG".
pub const MAGIC: u16 = 0x5047;
/// The protocol version this crate speaks: 3 since requests carry the switch epoch their
/// client last learned (at-most-once writes across switch restarts, [`crate::once`]); version
/// 2 had the 64-bit replica bitmap, version 1 a 32-bit one.
pub const PROTOCOL_VERSION: u8 = 3;
/// Size of the fixed header.
pub const HEADER_LEN: usize = 40;
/// Size of the two length prefixes of the body.
pub const BODY_PREFIX_LEN: usize = 4;
/// The store's default UDP port.
pub const DEFAULT_PORT: u16 = 7400;
/// Largest datagram payload: one 1500-byte Ethernet MTU minus the IPv4 (20) and UDP (8)
/// headers. Larger messages would be fragmented, and a switch cannot see the header of every
/// fragment, so they are never sent.
pub const MAX_PAYLOAD_LEN: usize = 1472;
/// Longest key.
pub const MAX_KEY_LEN: usize = 256;
/// Size of the reply address that ends a CHAIN_PUT's body ([`ReplyTo`]).
pub const REPLY_TO_LEN: usize = 6;
/// Longest value a client may write with a key of `key_len` bytes: what fits in one datagram
/// as a CHAIN_PUT, so that every write can be forwarded down a chain of racks.
pub const fn max_value_len(key_len: usize) -> usize {
    MAX_PAYLOAD_LEN.saturating_sub(HEADER_LEN + BODY_PREFIX_LEN + key_len + REPLY_TO_LEN)
}

/// The client id of the rack controller's own requests (GET and PUSH when keys change).
/// Clients never use it; stores serve it ahead of queued client requests.
pub const CONTROLLER_CLIENT_ID: u16 = 0xffff;

/// Byte offsets of the header fields, for code that reads them in place (the XDP program).
pub mod offset {
    pub const MAGIC: usize = 0;
    pub const PROTO_VERSION: usize = 2;
    pub const OP: usize = 3;
    pub const KEYHASH: usize = 4;
    pub const VERSION: usize = 12;
    pub const REQUEST_ID: usize = 20;
    pub const CLIENT_ID: usize = 24;
    pub const SERVER_ID: usize = 26;
    pub const FLAGS: usize = 27;
    pub const REPLICA_BITMAP: usize = 28;
    /// Replies: the sender's load.
    pub const LOAD: usize = 36;
    /// Requests: the switch epoch the client last learned (the same bytes as `LOAD`).
    pub const CLIENT_EPOCH: usize = 36;
    pub const STATUS: usize = 38;
}

/// Header flag bits.
pub mod flags {
    /// The version was stamped upstream (by the head rack of a chain): do not stamp again.
    pub const STAMPED: u8 = 0x01;
    /// Set by the switch on a request it routed by its directory (a hot key); echoed by the
    /// store in the reply, so that the switch can tell a steered reply from a cold one.
    pub const HOT: u8 = 0x02;
    /// Set by the client on every attempt of a request after the first: the switch looks up
    /// where a write's first attempt went only for retries.
    pub const RETRY: u8 = 0x04;
    /// Set by a switch on a GET reply it answered from its own cache (the in-switch cache
    /// baseline); the server id is then [`crate::cache::SWITCH_SERVER_ID`].
    pub const CACHED: u8 = 0x08;
    /// Set by the switch on a write whose client epoch is not the switch's (a copy sent before
    /// a switch restart, or by a client that has learned no epoch yet): the store must refuse
    /// it with `StaleEpoch`, never apply it. Its version field carries the switch's epoch.
    pub const STALE_EPOCH: u8 = 0x10;
    /// Set by the switch of a rack of a chain (not the tail) on a hot GET it steered: the
    /// version field carries the newest version of the key the rack knows committed (held by
    /// the tail), and the store answers only if what it holds is no newer (docs/chain.md,
    /// reads from every rack).
    pub const COMMITTED: u8 = 0x20;
}

/// Message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Op {
    /// Client read of a key.
    Get = 1,
    /// Client write of a key.
    Put = 2,
    /// Answer to a GET: the value and its version, or status `NotFound`.
    GetReply = 3,
    /// Answer to a PUT: the version the write was applied with.
    PutReply = 4,
    /// Server to server: copy of a key's version and value.
    Replicate = 5,
    /// Answer to a REPLICATE, sent through the switch so that it learns the new replica.
    ReplicateAck = 6,
    /// Chain replication: a write forwarded by a server to the key's home in the next rack,
    /// version kept, STAMPED set; its body ends with the client's address ([`ReplyTo`]), where
    /// the tail answers.
    ChainPut = 7,
    /// Chain replication: the next rack's server holds the version (or a newer one); sent
    /// back, hop by hop, to the server that forwarded the write.
    ChainAck = 8,
    /// Answer to a request that could not be served; `status` says why.
    Error = 9,
    /// Controller to store: send your version of the key to the servers in `replica_bitmap`
    /// (as REPLICATE messages).
    Push = 10,
    /// Answer to a PUSH: the version pushed (status NotFound if the store has no such key).
    PushReply = 11,
}

impl Op {
    /// Every op, for exhaustive tests.
    pub const ALL: [Op; 11] = [
        Op::Get,
        Op::Put,
        Op::GetReply,
        Op::PutReply,
        Op::Replicate,
        Op::ReplicateAck,
        Op::ChainPut,
        Op::ChainAck,
        Op::Error,
        Op::Push,
        Op::PushReply,
    ];

    /// Decodes an op code.
    pub const fn from_u8(code: u8) -> Option<Op> {
        Some(match code {
            1 => Op::Get,
            2 => Op::Put,
            3 => Op::GetReply,
            4 => Op::PutReply,
            5 => Op::Replicate,
            6 => Op::ReplicateAck,
            7 => Op::ChainPut,
            8 => Op::ChainAck,
            9 => Op::Error,
            10 => Op::Push,
            11 => Op::PushReply,
            _ => return None,
        })
    }

    /// True for messages sent *to* a store (requests); false for replies.
    pub const fn is_request(self) -> bool {
        matches!(
            self,
            Op::Get | Op::Put | Op::Replicate | Op::ChainPut | Op::Push
        )
    }

    /// True for replies whose version is one the sender holds: the directory learns from them.
    pub const fn reports_version(self) -> bool {
        matches!(
            self,
            Op::GetReply | Op::PutReply | Op::ReplicateAck | Op::PushReply
        )
    }

    /// True for writes, which the switch stamps with a version.
    pub const fn is_write(self) -> bool {
        matches!(self, Op::Put)
    }
}

/// Outcome of a request, carried in replies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Status {
    Ok = 0,
    /// GET of a key the store does not hold.
    NotFound = 1,
    /// The value does not fit in one datagram.
    ValueTooLarge = 2,
    /// The request could not be parsed, or its keyhash does not match its key.
    Malformed = 3,
    /// The op is not one this store serves.
    UnknownOp = 4,
    /// The key is longer than [`MAX_KEY_LEN`].
    KeyTooLarge = 5,
    /// The op is not accepted from this sender (server-to-server and controller ops come
    /// only from the rack's servers and its controller).
    Forbidden = 6,
    /// The store requires writes stamped by the switch, and this one is not.
    Unstamped = 7,
    /// The store's memory limit is reached: the write would grow it.
    Full = 8,
    /// The write carried a switch epoch that is not the switch's (it was sent before a switch
    /// restart, or its client had learned no epoch): refused, never applied. The reply's
    /// version is the switch's epoch in the high 16 bits, for the client to learn.
    StaleEpoch = 9,
    /// In a chain of racks, this rack does not serve this request: client writes go to the
    /// head rack.
    WrongRack = 10,
    /// In a chain of racks: the store holds a version of the key that it does not know to be
    /// committed (held by the tail): read it from the tail.
    NotCommitted = 11,
}

impl Status {
    /// Decodes a status code.
    pub const fn from_u16(code: u16) -> Option<Status> {
        Some(match code {
            0 => Status::Ok,
            1 => Status::NotFound,
            2 => Status::ValueTooLarge,
            3 => Status::Malformed,
            4 => Status::UnknownOp,
            5 => Status::KeyTooLarge,
            6 => Status::Forbidden,
            7 => Status::Unstamped,
            8 => Status::Full,
            9 => Status::StaleEpoch,
            10 => Status::WrongRack,
            11 => Status::NotCommitted,
            _ => return None,
        })
    }

    /// A short description for error messages.
    pub const fn describe(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::NotFound => "key not found",
            Status::ValueTooLarge => "value does not fit in one datagram",
            Status::Malformed => "malformed request",
            Status::UnknownOp => "operation not served by this store",
            Status::KeyTooLarge => "key too long",
            Status::Forbidden => "not accepted from this sender",
            Status::Unstamped => "the store takes only writes stamped by the switch",
            Status::Full => "the store is full (its memory limit is reached)",
            Status::StaleEpoch => "the switch restarted (or was never asked): learn its epoch",
            Status::WrongRack => "this rack of the chain does not take writes (the head does)",
            Status::NotCommitted => "this rack's copy is not known committed yet: read the tail",
        }
    }
}

/// Why bytes are not a valid message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the fixed header.
    Truncated,
    /// The magic is not 0x5047: not a Pegasus message at all.
    BadMagic,
    /// A protocol version this crate does not speak.
    UnsupportedVersion(u8),
    /// The body is shorter than its length fields say.
    TruncatedBody,
    /// Bytes after the value.
    TrailingBytes,
    /// The key is longer than [`MAX_KEY_LEN`].
    KeyTooLarge,
    /// The datagram is longer than [`MAX_PAYLOAD_LEN`].
    TooLarge,
}

/// Why a message cannot be encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// The key is longer than [`MAX_KEY_LEN`].
    KeyTooLarge,
    /// The message would exceed [`MAX_PAYLOAD_LEN`] (the value is too large).
    TooLarge,
    /// The output buffer is too small.
    BufferTooSmall,
    /// A CHAIN_PUT without a reply address, or another op with one.
    ReplyTo,
}

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            DecodeError::Truncated => write!(f, "shorter than the {HEADER_LEN}-byte header"),
            DecodeError::BadMagic => write!(f, "not a Pegasus message (bad magic)"),
            DecodeError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            DecodeError::TruncatedBody => write!(f, "body shorter than its length fields"),
            DecodeError::TrailingBytes => write!(f, "bytes after the value"),
            DecodeError::KeyTooLarge => write!(f, "key longer than {MAX_KEY_LEN} bytes"),
            DecodeError::TooLarge => write!(f, "datagram longer than {MAX_PAYLOAD_LEN} bytes"),
        }
    }
}

impl core::error::Error for DecodeError {}

impl core::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            EncodeError::KeyTooLarge => write!(f, "key longer than {MAX_KEY_LEN} bytes"),
            EncodeError::TooLarge => write!(f, "message longer than {MAX_PAYLOAD_LEN} bytes"),
            EncodeError::BufferTooSmall => write!(f, "output buffer too small"),
            EncodeError::ReplyTo => write!(f, "a reply address goes with CHAIN_PUT, and only"),
        }
    }
}

impl core::error::Error for EncodeError {}

/// The fixed header, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Raw op code; see [`Header::op`].
    pub op_code: u8,
    pub keyhash: u64,
    pub version: u64,
    pub request_id: u32,
    pub client_id: u16,
    /// Requests: the home server of the key; replies: the sender.
    pub server_id: u8,
    pub flags: u8,
    pub replica_bitmap: u64,
    /// Replies: the sender's current load (requests queued). Requests: the switch epoch the
    /// client last learned, 0 for none ([`Header::client_epoch`]).
    pub load: u16,
    /// Replies: a [`Status`] code; requests: 0.
    pub status: u16,
}

impl Header {
    /// A header for `op` with every other field zero.
    pub const fn new(op: Op) -> Header {
        Header {
            op_code: op as u8,
            keyhash: 0,
            version: 0,
            request_id: 0,
            client_id: 0,
            server_id: 0,
            flags: 0,
            replica_bitmap: 0,
            load: 0,
            status: 0,
        }
    }

    /// A request header: `op` for the key `keyhash` whose home is `home`, as request
    /// `request_id` of client `client_id`. Version, flags and replica bitmap are 0: only the
    /// switch and servers set them.
    pub const fn request(
        op: Op,
        keyhash: u64,
        client_id: u16,
        request_id: u32,
        home: u8,
    ) -> Header {
        Header {
            keyhash,
            request_id,
            client_id,
            server_id: home,
            ..Header::new(op)
        }
    }

    /// A reply header from server `server_id` to `request`: the request's key hash, client
    /// and request ids, its HOT flag (the switch's mark that the directory steered it), and
    /// the sender's `version`, `status` and `load`.
    pub const fn reply(
        op: Op,
        request: &Header,
        server_id: u8,
        version: u64,
        status: Status,
        load: u16,
    ) -> Header {
        Header {
            keyhash: request.keyhash,
            version,
            request_id: request.request_id,
            client_id: request.client_id,
            server_id,
            flags: request.flags & flags::HOT,
            load,
            status: status as u16,
            ..Header::new(op)
        }
    }

    /// This request with the switch epoch its client last learned.
    pub const fn with_client_epoch(self, epoch: u16) -> Header {
        Header {
            load: epoch,
            ..self
        }
    }

    /// A request's switch epoch, as its client last learned it (0: none).
    pub const fn client_epoch(&self) -> u16 {
        self.load
    }

    /// The op, if the code is known.
    pub const fn op(&self) -> Option<Op> {
        Op::from_u8(self.op_code)
    }

    /// The status, if the code is known.
    pub const fn status(&self) -> Option<Status> {
        Status::from_u16(self.status)
    }

    /// Decodes the fixed header from the start of `buf` (the body is not looked at).
    pub fn decode(buf: &[u8]) -> Result<Header, DecodeError> {
        let Some(h) = buf.get(..HEADER_LEN) else {
            return Err(DecodeError::Truncated);
        };
        if u16::from_be_bytes([h[0], h[1]]) != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        if h[offset::PROTO_VERSION] != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion(h[offset::PROTO_VERSION]));
        }
        Ok(Header {
            op_code: h[offset::OP],
            keyhash: be_u64(h, offset::KEYHASH),
            version: be_u64(h, offset::VERSION),
            request_id: be_u32(h, offset::REQUEST_ID),
            client_id: be_u16(h, offset::CLIENT_ID),
            server_id: h[offset::SERVER_ID],
            flags: h[offset::FLAGS],
            replica_bitmap: be_u64(h, offset::REPLICA_BITMAP),
            load: be_u16(h, offset::LOAD),
            status: be_u16(h, offset::STATUS),
        })
    }

    /// Writes the header into the first [`HEADER_LEN`] bytes of `out`.
    pub fn encode(&self, out: &mut [u8]) -> Result<(), EncodeError> {
        let Some(h) = out.get_mut(..HEADER_LEN) else {
            return Err(EncodeError::BufferTooSmall);
        };
        h[0..2].copy_from_slice(&MAGIC.to_be_bytes());
        h[offset::PROTO_VERSION] = PROTOCOL_VERSION;
        h[offset::OP] = self.op_code;
        h[4..12].copy_from_slice(&self.keyhash.to_be_bytes());
        h[12..20].copy_from_slice(&self.version.to_be_bytes());
        h[20..24].copy_from_slice(&self.request_id.to_be_bytes());
        h[24..26].copy_from_slice(&self.client_id.to_be_bytes());
        h[offset::SERVER_ID] = self.server_id;
        h[offset::FLAGS] = self.flags;
        h[28..36].copy_from_slice(&self.replica_bitmap.to_be_bytes());
        h[36..38].copy_from_slice(&self.load.to_be_bytes());
        h[38..40].copy_from_slice(&self.status.to_be_bytes());
        Ok(())
    }
}

/// Where the tail of a chain answers a forwarded write: the client's IPv4 address and UDP
/// port, as the head's store saw them, in the last [`REPLY_TO_LEN`] bytes of a CHAIN_PUT.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReplyTo {
    pub ipv4: [u8; 4],
    pub port: u16,
}

/// A whole message, borrowing key and value from the datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message<'a> {
    pub header: Header,
    pub key: &'a [u8],
    pub value: &'a [u8],
    /// CHAIN_PUT only (and always): where the tail answers.
    pub reply_to: Option<ReplyTo>,
}

impl<'a> Message<'a> {
    /// Decodes a whole datagram payload.
    pub fn decode(buf: &'a [u8]) -> Result<Message<'a>, DecodeError> {
        let header = Header::decode(buf)?;
        if buf.len() > MAX_PAYLOAD_LEN {
            return Err(DecodeError::TooLarge);
        }
        let body = &buf[HEADER_LEN..];
        let (key, rest) = take_prefixed(body)?;
        if key.len() > MAX_KEY_LEN {
            return Err(DecodeError::KeyTooLarge);
        }
        let (value, rest) = take_prefixed(rest)?;
        let (reply_to, rest) = if header.op_code == Op::ChainPut as u8 {
            let Some((address, rest)) = rest.split_first_chunk::<REPLY_TO_LEN>() else {
                return Err(DecodeError::TruncatedBody);
            };
            let reply_to = ReplyTo {
                ipv4: [address[0], address[1], address[2], address[3]],
                port: u16::from_be_bytes([address[4], address[5]]),
            };
            (Some(reply_to), rest)
        } else {
            (None, rest)
        };
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes);
        }
        Ok(Message {
            header,
            key,
            value,
            reply_to,
        })
    }

    /// A message without a reply address (every op but CHAIN_PUT).
    pub const fn new(header: Header, key: &'a [u8], value: &'a [u8]) -> Message<'a> {
        Message {
            header,
            key,
            value,
            reply_to: None,
        }
    }

    /// The encoded message in a buffer of its own (user space).
    #[cfg(feature = "user")]
    pub fn to_vec(&self) -> Result<alloc::vec::Vec<u8>, EncodeError> {
        let mut bytes = alloc::vec![0u8; self.encoded_len()];
        self.encode(&mut bytes)?;
        Ok(bytes)
    }

    /// Encodes into `out`, returning the number of bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.key.len() > MAX_KEY_LEN {
            return Err(EncodeError::KeyTooLarge);
        }
        let len = self.encoded_len();
        if len > MAX_PAYLOAD_LEN {
            return Err(EncodeError::TooLarge);
        }
        if out.len() < len {
            return Err(EncodeError::BufferTooSmall);
        }
        if (self.header.op_code == Op::ChainPut as u8) != self.reply_to.is_some() {
            return Err(EncodeError::ReplyTo);
        }
        self.header.encode(out)?;
        let mut at = HEADER_LEN;
        for part in [self.key, self.value] {
            // Lengths fit: both are bounded by MAX_PAYLOAD_LEN < u16::MAX, checked above.
            out[at..at + 2].copy_from_slice(&(part.len() as u16).to_be_bytes());
            at += 2;
            out[at..at + part.len()].copy_from_slice(part);
            at += part.len();
        }
        if let Some(reply_to) = self.reply_to {
            out[at..at + 4].copy_from_slice(&reply_to.ipv4);
            out[at + 4..at + REPLY_TO_LEN].copy_from_slice(&reply_to.port.to_be_bytes());
            at += REPLY_TO_LEN;
        }
        debug_assert_eq!(at, len);
        Ok(len)
    }

    /// Bytes this message takes on the wire.
    pub const fn encoded_len(&self) -> usize {
        let reply_to = if self.reply_to.is_some() {
            REPLY_TO_LEN
        } else {
            0
        };
        HEADER_LEN + BODY_PREFIX_LEN + self.key.len() + self.value.len() + reply_to
    }

    /// True when the header's keyhash is the hash of the key (a client bug or corruption
    /// otherwise). Messages without a key (some errors) are consistent by definition.
    pub fn keyhash_matches(&self) -> bool {
        self.key.is_empty() || self.header.keyhash == key_hash(self.key)
    }
}

fn take_prefixed(buf: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let Some(len) = buf.get(..2) else {
        return Err(DecodeError::TruncatedBody);
    };
    let len = u16::from_be_bytes([len[0], len[1]]) as usize;
    let rest = &buf[2..];
    if rest.len() < len {
        return Err(DecodeError::TruncatedBody);
    }
    Ok(rest.split_at(len))
}

fn be_u16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn header_strategy() -> impl Strategy<Value = Header> {
        (
            any::<u8>(),
            any::<u64>(),
            any::<u64>(),
            any::<u32>(),
            any::<u16>(),
            any::<u8>(),
            any::<u8>(),
            any::<u64>(),
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(op, kh, v, r, c, s, f, b, l, st)| Header {
                op_code: op,
                keyhash: kh,
                version: v,
                request_id: r,
                client_id: c,
                server_id: s,
                flags: f,
                replica_bitmap: b,
                load: l,
                status: st,
            })
    }

    #[test]
    fn header_layout_is_the_documented_one() {
        let h = Header {
            op_code: Op::Put as u8,
            keyhash: 0x0102_0304_0506_0708,
            version: 0x1112_1314_1516_1718,
            request_id: 0x2122_2324,
            client_id: 0x3132,
            server_id: 0x41,
            flags: 0x51,
            replica_bitmap: 0x6162_6364_6566_6768,
            load: 0x7172,
            status: 0x8182,
        };
        let mut b = [0u8; HEADER_LEN];
        h.encode(&mut b).unwrap();
        let expected: [u8; HEADER_LEN] = [
            0x50, 0x47, 3, 2, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17,
            0x18, 0x21, 0x22, 0x23, 0x24, 0x31, 0x32, 0x41, 0x51, 0x61, 0x62, 0x63, 0x64, 0x65,
            0x66, 0x67, 0x68, 0x71, 0x72, 0x81, 0x82,
        ];
        assert_eq!(b, expected);
    }

    #[test]
    fn every_op_code_round_trips() {
        for op in Op::ALL {
            assert_eq!(Op::from_u8(op as u8), Some(op));
        }
        assert_eq!(Op::from_u8(0), None);
        assert_eq!(Op::from_u8(12), None);
        assert!(Op::GetReply.reports_version() && !Op::Error.reports_version());
        assert!(Op::Get.is_request() && Op::Put.is_request() && !Op::GetReply.is_request());
        assert!(Op::Put.is_write() && !Op::Get.is_write() && !Op::ChainPut.is_write());
    }

    #[test]
    fn size_limits_are_enforced_both_ways() {
        let key = [b'k'; 10];
        let value = [0u8; MAX_PAYLOAD_LEN];
        let mut out = [0u8; 2 * MAX_PAYLOAD_LEN];
        // The longest value a client may write still fits once forwarded as a CHAIN_PUT.
        let put = Message::new(
            Header::new(Op::Put),
            &key,
            &value[..max_value_len(key.len())],
        );
        let n = put.encode(&mut out).unwrap();
        assert_eq!(n, MAX_PAYLOAD_LEN - REPLY_TO_LEN);
        assert_eq!(Message::decode(&out[..n]).unwrap(), put);
        let fits = Message {
            header: Header::new(Op::ChainPut),
            reply_to: Some(ReplyTo {
                ipv4: [10, 2, 0, 2],
                port: 40000,
            }),
            ..put
        };
        let n = fits.encode(&mut out).unwrap();
        assert_eq!(n, MAX_PAYLOAD_LEN);
        assert_eq!(Message::decode(&out[..n]).unwrap(), fits);
        let too_big = Message {
            value: &value[..max_value_len(key.len()) + 1],
            ..fits
        };
        assert_eq!(too_big.encode(&mut out), Err(EncodeError::TooLarge));
        let long_key = [b'k'; MAX_KEY_LEN + 1];
        let bad_key = Message {
            key: &long_key,
            value: &[],
            ..fits
        };
        assert_eq!(bad_key.encode(&mut out), Err(EncodeError::KeyTooLarge));
        // A datagram longer than the limit is rejected on decode too.
        assert_eq!(
            Message::decode(&out[..MAX_PAYLOAD_LEN + 1]),
            Err(DecodeError::TooLarge)
        );
    }

    #[test]
    fn specific_decode_errors() {
        assert_eq!(Header::decode(&[0x50, 0x47]), Err(DecodeError::Truncated));
        let mut b = [0u8; HEADER_LEN + 4];
        Header::new(Op::Get).encode(&mut b).unwrap();
        assert!(Message::decode(&b).is_ok());
        assert_eq!(
            Message::decode(&b[..HEADER_LEN + 3]),
            Err(DecodeError::TruncatedBody)
        );
        let mut trailing = [0u8; HEADER_LEN + 5];
        trailing[..HEADER_LEN + 4].copy_from_slice(&b);
        assert_eq!(Message::decode(&trailing), Err(DecodeError::TrailingBytes));
        // A CHAIN_PUT needs its reply address, exactly; other ops may not carry one.
        let mut chain = [0u8; HEADER_LEN + 4 + REPLY_TO_LEN];
        Header::new(Op::ChainPut).encode(&mut chain).unwrap();
        let decoded = Message::decode(&chain).unwrap();
        assert_eq!(
            decoded.reply_to,
            Some(ReplyTo {
                ipv4: [0; 4],
                port: 0
            })
        );
        assert_eq!(
            Message::decode(&chain[..HEADER_LEN + 4 + REPLY_TO_LEN - 1]),
            Err(DecodeError::TruncatedBody)
        );
        let mut out = [0u8; 64];
        assert_eq!(
            Message {
                reply_to: None,
                ..decoded
            }
            .encode(&mut out),
            Err(EncodeError::ReplyTo)
        );
        let put_with_address = Message {
            header: Header::new(Op::Put),
            ..decoded
        };
        assert_eq!(put_with_address.encode(&mut out), Err(EncodeError::ReplyTo));
        b[0] = 0;
        assert_eq!(Message::decode(&b), Err(DecodeError::BadMagic));
        b[0] = 0x50;
        // Version 1 had a 32-bit replica bitmap, so its fields sit elsewhere: refused.
        b[2] = 1;
        assert_eq!(Message::decode(&b), Err(DecodeError::UnsupportedVersion(1)));
    }

    #[test]
    fn keyhash_consistency() {
        let mut h = Header::new(Op::Get);
        h.keyhash = key_hash(b"k");
        let m = Message::new(h, b"k", b"");
        assert!(m.keyhash_matches());
        let bad = Message { key: b"j", ..m };
        assert!(!bad.keyhash_matches());
    }

    proptest! {
        #[test]
        fn message_round_trip(
            header in header_strategy(),
            key in proptest::collection::vec(any::<u8>(), 0..=MAX_KEY_LEN),
            value in proptest::collection::vec(any::<u8>(), 0..1200),
            reply_to in (any::<[u8; 4]>(), any::<u16>()),
        ) {
            let reply_to = (header.op_code == Op::ChainPut as u8)
                .then_some(ReplyTo { ipv4: reply_to.0, port: reply_to.1 });
            let m = Message { header, key: &key, value: &value, reply_to };
            let mut out = vec![0u8; MAX_PAYLOAD_LEN];
            match m.encode(&mut out) {
                Ok(n) => {
                    prop_assert_eq!(n, m.encoded_len());
                    prop_assert_eq!(Message::decode(&out[..n]), Ok(m));
                }
                Err(e) => {
                    prop_assert_eq!(e, EncodeError::TooLarge);
                    prop_assert!(m.encoded_len() > MAX_PAYLOAD_LEN);
                }
            }
        }

        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
            let _ = Message::decode(&bytes);
            let _ = Header::decode(&bytes);
        }

        #[test]
        fn decoding_arbitrary_bodies_never_panics(
            header in header_strategy(),
            body in proptest::collection::vec(any::<u8>(), 0..600),
        ) {
            let mut buf = vec![0u8; HEADER_LEN];
            header.encode(&mut buf).unwrap();
            buf.extend_from_slice(&body);
            if let Ok(m) = Message::decode(&buf) {
                prop_assert_eq!(m.encoded_len(), buf.len());
            }
        }

        #[test]
        fn every_truncation_is_an_error(
            header in header_strategy(),
            key in proptest::collection::vec(any::<u8>(), 0..40),
            value in proptest::collection::vec(any::<u8>(), 0..200),
        ) {
            let reply_to = (header.op_code == Op::ChainPut as u8)
                .then_some(ReplyTo { ipv4: [10, 2, 0, 2], port: 7 });
            let m = Message { header, key: &key, value: &value, reply_to };
            let mut out = vec![0u8; MAX_PAYLOAD_LEN];
            let n = m.encode(&mut out).unwrap();
            for cut in 0..n {
                prop_assert!(Message::decode(&out[..cut]).is_err(), "cut at {}", cut);
            }
        }
    }
}
