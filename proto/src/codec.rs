//! The control connection's byte codec: messages in, bytes out, and back.
//!
//! [`Codec`] is the boundary between the session (what is said) and the wire (how it is framed and
//! protected). Wire v1 is [`V1Codec`]: plain frames until `LoginResp`, then AES-128-CFB both ways.
//! Wire v2 (frp 0.69+: a hello exchange, then AEAD frames) is [`crate::v2::V2Codec`], under the
//! same [`crate::session::Session`].

use crate::crypto::{Decryptor, Encryptor, BLOCK};
use crate::frame::FrameDecoder;
use crate::msg::{Message, MessageError};

/// Turns messages into the control connection's bytes and its bytes into messages.
pub trait Codec: Send {
    /// Appends `msg`, framed (and protected once the session is), to `out`.
    fn encode(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), MessageError>;

    /// Takes bytes from the front of `input` and returns the next whole message, if any. Bytes
    /// after a message are left in `input` (or buffered) for the next call: a login answer may be
    /// followed by bytes the codec must read differently.
    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, MessageError>;

    /// The server accepted the login: from here on, the channel is protected.
    fn logged_in(&mut self);

    /// Whether the server has yet to say its first word of a hello exchange (wire v2): a
    /// connection that ends here ends at a server that did not take the client's hello.
    fn awaiting_hello(&self) -> bool {
        false
    }

    /// Whether part of a frame (or record) is buffered: the connection ending now cut it short.
    fn mid_frame(&self) -> bool;
}

/// Wire v1: a frame is a type byte, a big-endian `i64` length and a JSON body; after `LoginResp`
/// each direction is AES-128-CFB with its own IV, sent in clear before its first byte.
pub struct V1Codec {
    /// The PBKDF2 key of the token ([`crate::auth::derive_key`]).
    key: [u8; BLOCK],
    frames: FrameDecoder,
    /// The IV this side will use (chosen by the caller: the codec has no randomness).
    iv: [u8; BLOCK],
    encrypt: Option<Encryptor>,
    decrypt: Option<Decryptor>,
    /// Decrypted bytes not yet framed.
    plain: Vec<u8>,
    used: usize,
}

impl V1Codec {
    /// A codec that will encrypt with `key` and `iv` after the login (`iv` random in production).
    pub fn new(key: [u8; BLOCK], iv: [u8; BLOCK]) -> Self {
        Self { key, frames: FrameDecoder::new(), iv, encrypt: None, decrypt: None, plain: Vec::new(), used: 0 }
    }
}

impl Codec for V1Codec {
    fn encode(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), MessageError> {
        let start = out.len();
        msg.encode(out)?;
        if let Some(enc) = &mut self.encrypt {
            if let Some(iv) = enc.take_iv() {
                out.splice(start..start, iv);
                enc.encrypt(&mut out[start + BLOCK..]);
            } else {
                enc.encrypt(&mut out[start..]);
            }
        }
        Ok(())
    }

    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, MessageError> {
        let Some(dec) = &mut self.decrypt else {
            // Plain frames: consume exactly one, so that what follows `LoginResp` stays unread.
            let (n, frame) = self.frames.decode(input)?;
            *input = &input[n..];
            return frame.map(|f| Message::parse(&f)).transpose();
        };
        if !input.is_empty() {
            let mut bytes = input.to_vec();
            let start = dec.decrypt(&mut bytes);
            self.plain.extend_from_slice(&bytes[start..]);
            *input = &[];
        }
        let (n, frame) = self.frames.decode(&self.plain[self.used..])?;
        self.used += n;
        if self.used == self.plain.len() {
            self.plain.clear();
            self.used = 0;
        }
        frame.map(|f| Message::parse(&f)).transpose()
    }

    fn logged_in(&mut self) {
        self.encrypt = Some(Encryptor::new(&self.key, self.iv));
        self.decrypt = Some(Decryptor::new(&self.key));
    }

    fn mid_frame(&self) -> bool {
        !self.frames.is_idle()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{LoginResp, Ping, Pong};

    #[test]
    fn plain_until_login_then_encrypted_both_ways_in_any_chunking() {
        let key = crate::auth::derive_key("t");
        let (client_iv, server_iv) = ([1u8; BLOCK], [2u8; BLOCK]);
        // The server's side, built from the cipher halves directly.
        let mut wire =
            Message::LoginResp(LoginResp { version: "0.65.0".into(), run_id: "r".into(), error: String::new() })
                .to_bytes()
                .unwrap();
        let mut server_enc = Encryptor::new(&key, server_iv);
        let mut tail = server_iv.to_vec();
        let mut pong = Message::Pong(Pong::default()).to_bytes().unwrap();
        server_enc.encrypt(&mut pong);
        tail.extend_from_slice(&pong);
        wire.extend_from_slice(&tail);
        let _ = server_enc.take_iv();

        for chunk in [1, 3, 9, 16, 17, wire.len()] {
            let mut codec = V1Codec::new(key, client_iv);
            let mut got = Vec::new();
            for piece in wire.chunks(chunk) {
                let mut input = piece;
                while let Some(m) = codec.decode(&mut input).unwrap() {
                    if matches!(m, Message::LoginResp(_)) {
                        codec.logged_in();
                    }
                    got.push(m.msg_type());
                }
                assert!(input.is_empty());
            }
            assert_eq!(got, [crate::MsgType::LoginResp, crate::MsgType::Pong], "chunk {chunk}");

            // What it sends after the login: the IV once, then ciphertext the server can read.
            let mut out = Vec::new();
            codec.encode(&Message::Ping(Ping::default()), &mut out).unwrap();
            codec.encode(&Message::Ping(Ping::default()), &mut out).unwrap();
            assert_eq!(&out[..BLOCK], &client_iv);
            let mut server_dec = Decryptor::new(&key);
            let start = server_dec.decrypt(&mut out);
            let mut plain = &out[start..];
            let one = Message::Ping(Ping::default()).to_bytes().unwrap();
            assert_eq!(&plain[..one.len()], &one[..]);
            plain = &plain[one.len()..];
            assert_eq!(plain, &one[..]);
        }
    }
}
