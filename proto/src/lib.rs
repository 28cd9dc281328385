//! The frp client ↔ server wire protocol (v1 and v2), without I/O.
//!
//! This crate is to burrow what `quinn-proto` is to `quinn`: every byte that crosses the wire is
//! produced and parsed here, and nothing here reads a socket, spawns a task or looks at a clock.
//! The I/O layer feeds bytes in and writes bytes out; that keeps the protocol exhaustively testable
//! (byte-exact vectors from the real frp 0.65.0 binaries, one-byte-at-a-time decoding) and fuzzable.
//!
//! Layering, outermost first, as seen by a client (see `docs/frp-protocol.md` in the project):
//!
//! * [`frame`]: v1 framing — a type byte, an `int64` big-endian length, a JSON body of at most
//!   [`frame::MAX_BODY_LEN`] bytes. [`frame::FrameDecoder`] is incremental and never buffers more
//!   than one frame.
//! * [`msg`]: the messages a client sends and receives, serialised field for field as frp's Go
//!   structs are (order, `omitempty`, the always-present `client_spec`).
//! * [`auth`]: the login privilege key (`md5(token ‖ timestamp)`) and the PBKDF2 key that the
//!   stream cipher uses.
//! * [`crypto`]: AES-128-CFB stream encryption with the IV sent in clear before the first byte —
//!   the control channel after `LoginResp`, and work connections with `useEncryption`.
//! * [`snappy`]: the snappy *framing format* used by `useCompression`; compress, then encrypt.
//! * [`codec`]: the control connection's bytes ↔ messages (v1: plain until the login, then
//!   AES-CFB); the boundary each wire version plugs into.
//! * [`error`]: why bytes are not valid wire v2 ([`error::WireError`]).
//! * [`v2`]: wire v2 (frp 0.69+) — magic, binary frames, the hello exchange, the HKDF keys and
//!   the AEAD stream of the control channel, and [`v2::V2Codec`].
//! * [`session`]: the control session itself — login, proxy registration and retry,
//!   heartbeats, the work-connection cap, and which failures are fatal — as a state machine
//!   driven by bytes in, bytes out and `now`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod codec;
pub mod crypto;
pub mod error;
pub mod frame;
pub mod msg;
pub mod session;
pub mod snappy;
pub mod v2;

pub use frame::{Frame, FrameDecoder, FrameError, MsgType, MAX_BODY_LEN};
pub use msg::{Message, MessageError};

/// The frp wire protocol version a client speaks; frps 0.69+ serves both, older frps only v1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Wire {
    /// Type byte + `i64` length frames, AES-128-CFB control channel (every frps).
    #[default]
    V1,
    /// Binary frames, hello exchange, AEAD control channel (frps 0.69+).
    V2,
}

impl Wire {
    /// `v1` or `v2`, as frp's `transport.wireProtocol` spells it.
    pub fn name(self) -> &'static str {
        match self {
            Wire::V1 => "v1",
            Wire::V2 => "v2",
        }
    }

    /// The version `transport.wireProtocol` names.
    pub fn from_name(name: &str) -> Option<Wire> {
        match name {
            "v1" => Some(Wire::V1),
            "v2" => Some(Wire::V2),
            _ => None,
        }
    }
}

impl std::fmt::Display for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The frp version burrow announces in `Login.version`. frps does not check it (it only logs it),
/// so burrow announces the release whose wire format it was verified against.
pub const FRP_VERSION: &str = "0.65.0";
