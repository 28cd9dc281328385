//! The frp client ↔ server wire protocol (v1), without I/O.
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
//!   AES-CFB); the boundary a second wire version plugs into.
//! * [`session`]: the control session itself — login, proxy registration and retry,
//!   heartbeats, the work-connection cap, and which failures are fatal — as a state machine
//!   driven by bytes in, bytes out and `now`.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod auth;
pub mod codec;
pub mod crypto;
pub mod frame;
pub mod msg;
pub mod session;
pub mod snappy;

pub use frame::{Frame, FrameDecoder, FrameError, MsgType, MAX_BODY_LEN};
pub use msg::{Message, MessageError};

/// The frp version burrow announces in `Login.version`. frps does not check it (it only logs it),
/// so burrow announces the release whose wire format it was verified against.
pub const FRP_VERSION: &str = "0.65.0";
