//! Why bytes are not valid wire v2: below both the messages ([`crate::msg`], which carries it in
//! its own error) and the v2 codec ([`crate::v2`], which makes it), so neither imports the other
//! for it.

/// Why bytes are not valid wire v2.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// A frame header with non-zero flags.
    #[error("frp v2 frame with flags 0x{0:04x} (frp defines none)")]
    Flags(u16),
    /// A frame payload over [`crate::v2::MAX_PAYLOAD`].
    #[error("frp v2 frame payload of {0} bytes exceeds the 65536-byte limit")]
    TooLong(u64),
    /// A frame of another type than the exchange calls for.
    #[error("unexpected frp v2 frame type {got} (expected {want})")]
    UnexpectedFrame {
        /// The type received.
        got: u16,
        /// The type the exchange called for.
        want: u16,
    },
    /// A message frame too short for its id.
    #[error("frp v2 message frame of {0} bytes is too short for a message id")]
    ShortMessage(usize),
    /// A message id frp does not define.
    #[error("unknown frp v2 message id {0}")]
    UnknownMessage(u16),
    /// frps answered the hello with an error.
    #[error("frps refused the wire v2 hello: {0}")]
    HelloRefused(String),
    /// The ServerHello is not the JSON frp sends.
    #[error("malformed ServerHello: {0}")]
    BadHello(String),
    /// The ServerHello chose a message codec other than JSON.
    #[error("ServerHello selected message codec {0:?}; burrow speaks \"json\"")]
    Codec(String),
    /// The ServerHello chose an algorithm this client did not offer.
    #[error("ServerHello selected crypto algorithm {0:?}, which burrow did not offer")]
    Algorithm(String),
    /// The ServerHello's random has the wrong length.
    #[error("ServerHello's serverRandom is {0} bytes, not 32")]
    ServerRandom(usize),
    /// An AEAD record length outside what frp writes.
    #[error("AEAD record length {0} is outside 16..=65552")]
    RecordLength(u32),
    /// An AEAD record failed authentication.
    #[error(
        "an AEAD record of the control channel failed authentication (tampered with, or keyed with another token)"
    )]
    Authentication,
    /// The record counter ran out (2³² AES-GCM records on one connection).
    #[error("the AEAD record counter of the control channel is exhausted")]
    Exhausted,
}
