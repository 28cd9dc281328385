//! v1 framing: `type: u8 ‖ length: i64 BE ‖ body: [u8; length]`.
//!
//! frp's reader (golib `msg.ReadMsg`) rejects unknown type bytes, negative lengths and bodies over
//! 10240 bytes by closing the connection; burrow enforces the same cap on decode *and* encode, so it
//! never allocates for a hostile length and never sends a frame frps would drop.

use std::fmt;

/// Largest body frp accepts (golib's default `maxMsgLength`).
pub const MAX_BODY_LEN: usize = 10240;

/// Bytes before the body: the type byte and the 8-byte length.
pub const HEADER_LEN: usize = 9;

macro_rules! msg_types {
    ($($(#[$doc:meta])* $name:ident = $byte:literal / $v2:literal,)*) => {
        /// The message type: a byte in v1 frames, a `u16` id in v2 message frames (§3.1 of the
        /// protocol notes).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[repr(u8)]
        pub enum MsgType {
            $($(#[$doc])* $name = $byte,)*
        }

        impl MsgType {
            /// Every type byte frp defines.
            pub const ALL: &'static [MsgType] = &[$(MsgType::$name,)*];

            /// The type for a byte, or `None` when frp defines no such message.
            pub fn from_byte(b: u8) -> Option<MsgType> {
                match b {
                    $($byte => Some(MsgType::$name),)*
                    _ => None,
                }
            }

            /// The type for a wire v2 message id, or `None` when frp defines no such message.
            pub fn from_v2_id(id: u16) -> Option<MsgType> {
                match id {
                    $($v2 => Some(MsgType::$name),)*
                    _ => None,
                }
            }

            /// The wire v2 message id.
            pub fn v2_id(self) -> u16 {
                match self {
                    $(MsgType::$name => $v2,)*
                }
            }

            /// frp's name for the message.
            pub fn name(self) -> &'static str {
                match self {
                    $(MsgType::$name => stringify!($name),)*
                }
            }
        }
    };
}

msg_types! {
    /// Client → server, first message of the control connection.
    Login = b'o' / 1,
    /// Server → client, answer to `Login` (plaintext).
    LoginResp = b'1' / 2,
    /// Client → server: register a proxy (tunnel).
    NewProxy = b'p' / 3,
    /// Server → client: answer to `NewProxy`.
    NewProxyResp = b'2' / 4,
    /// Client → server: unregister a proxy.
    CloseProxy = b'c' / 5,
    /// Client → server, first message of a work connection.
    NewWorkConn = b'w' / 6,
    /// Server → client: open one more work connection.
    ReqWorkConn = b'r' / 7,
    /// Server → client, on a work connection: a user connection is attached.
    StartWorkConn = b's' / 8,
    /// Client → server, visitor connections (stcp/sudp/xtcp).
    NewVisitorConn = b'v' / 9,
    /// Server → client, answer to `NewVisitorConn`.
    NewVisitorConnResp = b'3' / 10,
    /// Client → server heartbeat.
    Ping = b'h' / 11,
    /// Server → client heartbeat answer.
    Pong = b'4' / 12,
    /// UDP payload, both directions.
    UdpPacket = b'u' / 13,
    /// xtcp hole punching.
    NatHoleVisitor = b'i' / 14,
    /// xtcp hole punching.
    NatHoleClient = b'n' / 15,
    /// xtcp hole punching.
    NatHoleResp = b'm' / 16,
    /// xtcp hole punching.
    NatHoleSid = b'5' / 17,
    /// xtcp hole punching.
    NatHoleReport = b'6' / 18,
}

impl fmt::Display for MsgType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?})", self.name(), *self as u8 as char)
    }
}

/// A frame whose header has been checked; the body is not parsed yet. `T` is the frame type: a
/// [`MsgType`] in v1, the `u16` frame type in v2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame<T = MsgType> {
    /// The frame type.
    pub ty: T,
    /// The body (v1: JSON of at most [`MAX_BODY_LEN`] bytes; v2: at most 64 KiB).
    pub body: Vec<u8>,
}

/// Why bytes are not a valid v1 frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The type byte names no frp message.
    #[error("unknown frp message type byte 0x{0:02x}; the server may speak another protocol (frp wire v2, or not frp at all)")]
    UnknownType(u8),
    /// The length field is negative.
    #[error("negative frp frame length {0}")]
    NegativeLength(i64),
    /// The body is longer than frp allows.
    #[error("frp frame body of {len} bytes exceeds the {max}-byte limit", max = MAX_BODY_LEN)]
    TooLong {
        /// The length that was announced or attempted.
        len: u64,
    },
}

/// Encodes one frame. Fails, without output, when the body exceeds [`MAX_BODY_LEN`].
pub fn encode(ty: MsgType, body: &[u8], out: &mut Vec<u8>) -> Result<(), FrameError> {
    if body.len() > MAX_BODY_LEN {
        return Err(FrameError::TooLong { len: body.len() as u64 });
    }
    out.reserve(HEADER_LEN + body.len());
    out.push(ty as u8);
    out.extend_from_slice(&(body.len() as i64).to_be_bytes());
    out.extend_from_slice(body);
    Ok(())
}

/// How one wire version's frame header reads: its length, and the checks that give the frame's
/// type and body length (or refuse the header).
pub trait Header {
    /// Bytes before the body.
    const LEN: usize;
    /// The frame type.
    type Type: Copy;
    /// Why a header is refused.
    type Error;
    /// Checks a whole header; returns the type and the body length (within the version's cap).
    fn parse(header: &[u8]) -> Result<(Self::Type, usize), Self::Error>;
}

/// The v1 header: a type byte and an `i64` big-endian length.
#[derive(Debug)]
pub enum V1 {}

impl Header for V1 {
    const LEN: usize = HEADER_LEN;
    type Type = MsgType;
    type Error = FrameError;

    fn parse(h: &[u8]) -> Result<(MsgType, usize), FrameError> {
        let ty = MsgType::from_byte(h[0]).ok_or(FrameError::UnknownType(h[0]))?;
        let len = i64::from_be_bytes(h[1..9].try_into().expect("8 bytes"));
        if len < 0 {
            return Err(FrameError::NegativeLength(len));
        }
        if len as u64 > MAX_BODY_LEN as u64 {
            return Err(FrameError::TooLong { len: len as u64 });
        }
        Ok((ty, len as usize))
    }
}

/// Largest header of any wire version.
const MAX_HEADER_LEN: usize = 9;

/// Incremental frame decoder.
///
/// Feed it any slicing of the input; it checks the header as soon as its bytes are in, so a
/// hostile length is refused before any body is buffered. For a connection whose bytes after
/// a frame belong to another layer (the control connection turns encrypted right after
/// `LoginResp`), read only [`Decoder::wanted`] bytes at a time: then nothing is read ahead.
#[derive(Debug)]
pub struct Decoder<H: Header> {
    header: [u8; MAX_HEADER_LEN],
    header_len: usize,
    ty: Option<H::Type>,
    body: Vec<u8>,
    body_len: usize,
}

/// The v1 frame decoder.
pub type FrameDecoder = Decoder<V1>;

/// What [`Decoder::decode`] gives: the bytes it used, and the frame they completed, if any.
pub type Decoded<T> = (usize, Option<Frame<T>>);

impl<H: Header> Default for Decoder<H> {
    fn default() -> Self {
        Self { header: [0; MAX_HEADER_LEN], header_len: 0, ty: None, body: Vec::new(), body_len: 0 }
    }
}

impl<H: Header> Decoder<H> {
    /// A decoder waiting for the start of a frame.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many more bytes the current frame needs (never 0).
    pub fn wanted(&self) -> usize {
        match self.ty {
            None => H::LEN - self.header_len,
            Some(_) => self.body_len - self.body.len(),
        }
        .max(1)
    }

    /// Whether the decoder is between frames (no partial frame buffered).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && self.ty.is_none()
    }

    /// Consumes bytes from `input` up to the end of the current frame.
    ///
    /// Returns how many bytes were consumed and the frame if one was completed; bytes after a
    /// completed frame are left unconsumed. After an error the decoder must not be used again (the
    /// connection is to be closed, as frp does).
    pub fn decode(&mut self, input: &[u8]) -> Result<Decoded<H::Type>, H::Error> {
        let mut used = 0;
        if self.ty.is_none() {
            let n = (H::LEN - self.header_len).min(input.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
            self.header_len += n;
            used += n;
            if self.header_len < H::LEN {
                return Ok((used, None));
            }
            let (ty, len) = H::parse(&self.header[..H::LEN])?;
            self.ty = Some(ty);
            self.body_len = len;
            self.body = Vec::with_capacity(len);
        }
        let n = (self.body_len - self.body.len()).min(input.len() - used);
        self.body.extend_from_slice(&input[used..used + n]);
        used += n;
        if self.body.len() < self.body_len {
            return Ok((used, None));
        }
        let frame = Frame { ty: self.ty.take().expect("header parsed"), body: std::mem::take(&mut self.body) };
        self.header_len = 0;
        self.body_len = 0;
        Ok((used, Some(frame)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(ty: MsgType, body: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        encode(ty, body, &mut out).unwrap();
        out
    }

    #[test]
    fn header_layout() {
        let bytes = enc(MsgType::Ping, b"{}");
        assert_eq!(bytes, [b'h', 0, 0, 0, 0, 0, 0, 0, 2, b'{', b'}']);
    }

    #[test]
    fn every_type_byte_round_trips() {
        for &ty in MsgType::ALL {
            assert_eq!(MsgType::from_byte(ty as u8), Some(ty));
            assert_eq!(MsgType::from_v2_id(ty.v2_id()), Some(ty));
            let bytes = enc(ty, b"{}");
            let (used, frame) = FrameDecoder::new().decode(&bytes).unwrap();
            assert_eq!(used, bytes.len());
            assert_eq!(frame, Some(Frame { ty, body: b"{}".to_vec() }));
        }
        assert_eq!(MsgType::ALL.len(), 18);
    }

    #[test]
    fn one_byte_at_a_time_equals_all_at_once() {
        let mut stream = enc(MsgType::LoginResp, br#"{"version":"0.65.0","run_id":"89eac65ac89360e8"}"#);
        stream.extend(enc(MsgType::ReqWorkConn, b"{}"));
        stream.extend(enc(MsgType::Pong, b""));
        let mut dec = FrameDecoder::new();
        let mut frames = Vec::new();
        for b in &stream {
            assert!(dec.wanted() >= 1);
            let (used, f) = dec.decode(std::slice::from_ref(b)).unwrap();
            assert_eq!(used, 1);
            frames.extend(f);
        }
        assert!(dec.is_idle());
        let mut all = Vec::new();
        let mut rest = &stream[..];
        let mut dec = FrameDecoder::new();
        while !rest.is_empty() {
            let (used, f) = dec.decode(rest).unwrap();
            rest = &rest[used..];
            all.extend(f);
        }
        assert_eq!(frames, all);
        assert_eq!(frames.len(), 3);
        assert_eq!(frames[2].body, b"");
    }

    #[test]
    fn decode_stops_at_frame_end() {
        let mut stream = enc(MsgType::LoginResp, b"{}");
        stream.extend_from_slice(b"ciphertext");
        let (used, f) = FrameDecoder::new().decode(&stream).unwrap();
        assert_eq!(used, 11);
        assert!(f.is_some());
    }

    #[test]
    fn wanted_never_reads_ahead() {
        let stream = enc(MsgType::LoginResp, b"{\"a\":1}");
        let mut dec = FrameDecoder::new();
        assert_eq!(dec.wanted(), 9);
        dec.decode(&stream[..9]).unwrap();
        assert_eq!(dec.wanted(), 7);
        let (_, f) = dec.decode(&stream[9..]).unwrap();
        assert!(f.is_some());
        assert_eq!(dec.wanted(), 9);
    }

    #[test]
    fn cap_is_enforced_both_ways() {
        let body = vec![b' '; MAX_BODY_LEN];
        assert!(encode(MsgType::NewProxy, &body, &mut Vec::new()).is_ok());
        let body = vec![b' '; MAX_BODY_LEN + 1];
        let mut out = Vec::new();
        assert_eq!(encode(MsgType::NewProxy, &body, &mut out), Err(FrameError::TooLong { len: 10241 }));
        assert!(out.is_empty());

        let mut hdr = vec![b'1'];
        hdr.extend_from_slice(&10241i64.to_be_bytes());
        assert_eq!(FrameDecoder::new().decode(&hdr), Err(FrameError::TooLong { len: 10241 }));
        let mut hdr = vec![b'1'];
        hdr.extend_from_slice(&i64::MAX.to_be_bytes());
        assert!(matches!(FrameDecoder::new().decode(&hdr), Err(FrameError::TooLong { .. })));
    }

    #[test]
    fn hostile_headers_are_errors() {
        let mut hdr = vec![b'1'];
        hdr.extend_from_slice(&(-1i64).to_be_bytes());
        assert_eq!(FrameDecoder::new().decode(&hdr), Err(FrameError::NegativeLength(-1)));
        // A TLS record, an HTTP answer and the v2 magic are not v1 frames.
        for first in [0x16u8, b'H', b'F', 0x00, 0xff] {
            let mut bytes = vec![first];
            bytes.extend_from_slice(&[0u8; 8]);
            assert_eq!(FrameDecoder::new().decode(&bytes), Err(FrameError::UnknownType(first)));
        }
    }

    #[test]
    fn truncated_frame_is_incomplete_not_error() {
        let stream = enc(MsgType::NewProxyResp, br#"{"proxy_name":"web"}"#);
        for cut in 0..stream.len() {
            let (used, f) = FrameDecoder::new().decode(&stream[..cut]).unwrap();
            assert_eq!(used, cut);
            assert!(f.is_none());
        }
    }
}
