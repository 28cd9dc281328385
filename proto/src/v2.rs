//! Wire v2 (frp 0.69+, opt-in): a magic prefix, binary frames, a hello exchange that picks an
//! AEAD, and the control channel sealed with it after `LoginResp` (§10 of the protocol notes).
//!
//! A v2 connection starts with [`MAGIC`]; then frames `type: u16 ‖ flags: u16 (0) ‖ length: u32 ‖
//! payload`, all big-endian, payload at most [`MAX_PAYLOAD`]. A message frame's payload is the
//! message's v2 id (`u16`) and its JSON body, the same JSON as in v1. The control connection sends
//! a `ClientHello` before `Login`; frps answers `ServerHello` (the chosen AEAD and its random)
//! before `LoginResp`. After `LoginResp` each direction is an AEAD stream keyed by HKDF over the
//! token and a hash of both hellos. Work connections send the magic and message frames only.
//!
//! Nothing here is trusted from the peer: lengths are checked before anything is buffered, a
//! record is at most 64 KiB + 16, and every failure is a [`WireError`] that names what was wrong.

use aes_gcm::aead::{AeadInPlace, KeyInit};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec::Codec;
use crate::frame::{Decoder, Header, MsgType};
use crate::msg::{Message, MessageError};

/// Sent once, first, on every v2 connection or yamux stream: `"FRP\0\x02\r\n"`.
pub const MAGIC: [u8; 7] = *b"FRP\x00\x02\r\n";
/// Bytes before a frame's payload.
pub const HEADER_LEN: usize = 8;
/// Largest frame payload (and AEAD record plaintext) frp accepts.
pub const MAX_PAYLOAD: usize = 64 * 1024;
/// Frame type of the client's hello (JSON).
pub const CLIENT_HELLO: u16 = 1;
/// Frame type of the server's hello (JSON).
pub const SERVER_HELLO: u16 = 2;
/// Frame type of a message: v2 id ‖ JSON body.
pub const MESSAGE: u16 = 16;
/// Length of `clientRandom` and `serverRandom`.
pub const RANDOM_LEN: usize = 32;
/// AEAD tag length (both algorithms).
const TAG_LEN: usize = 16;
/// AES-GCM records per stream, at most (golib's limit; random nonces, 2³² keeps collisions away).
const AES_GCM_RECORD_LIMIT: u64 = 1 << 32;

pub use crate::error::WireError;

/// A v2 frame whose header has been checked: its `u16` type ([`CLIENT_HELLO`], [`SERVER_HELLO`],
/// [`MESSAGE`]; others are kept for the caller to refuse) and at most [`MAX_PAYLOAD`] bytes.
pub type Frame = crate::frame::Frame<u16>;

/// The v2 header: type, flags (zero) and length, big-endian.
#[derive(Debug)]
pub enum V2 {}

impl Header for V2 {
    const LEN: usize = HEADER_LEN;
    type Type = u16;
    type Error = WireError;

    fn parse(h: &[u8]) -> Result<(u16, usize), WireError> {
        let flags = u16::from_be_bytes([h[2], h[3]]);
        if flags != 0 {
            return Err(WireError::Flags(flags));
        }
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(WireError::TooLong(len as u64));
        }
        Ok((u16::from_be_bytes([h[0], h[1]]), len))
    }
}

/// The v2 frame decoder: like v1's, checks the header before buffering, stops at each frame's end.
pub type FrameDecoder = Decoder<V2>;

/// Appends one frame; fails, without output, when `payload` exceeds [`MAX_PAYLOAD`].
pub fn encode_frame(ty: u16, payload: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
    header(ty, payload.len(), out)?;
    out.extend_from_slice(payload);
    Ok(())
}

fn header(ty: u16, len: usize, out: &mut Vec<u8>) -> Result<(), WireError> {
    if len > MAX_PAYLOAD {
        return Err(WireError::TooLong(len as u64));
    }
    out.reserve(HEADER_LEN + len);
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Appends `msg` as a v2 message frame.
pub fn encode_message(msg: &Message, out: &mut Vec<u8>) -> Result<(), WireError> {
    let body = msg.body();
    header(MESSAGE, 2 + body.len(), out)?;
    out.extend_from_slice(&msg.msg_type().v2_id().to_be_bytes());
    out.extend_from_slice(&body);
    Ok(())
}

/// Parses a message frame.
pub fn parse_message(frame: &Frame) -> Result<Message, MessageError> {
    if frame.ty != MESSAGE {
        return Err(WireError::UnexpectedFrame { got: frame.ty, want: MESSAGE }.into());
    }
    let [hi, lo, body @ ..] = &frame.body[..] else {
        return Err(WireError::ShortMessage(frame.body.len()).into());
    };
    let id = u16::from_be_bytes([*hi, *lo]);
    let ty = MsgType::from_v2_id(id).ok_or(WireError::UnknownMessage(id))?;
    Message::from_body(ty, body)
}

/// The control channel's AEAD, as the hello names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// `aes-256-gcm` (12-byte nonces).
    Aes256Gcm,
    /// `xchacha20-poly1305` (24-byte nonces).
    XChaCha20Poly1305,
}

impl Algorithm {
    /// Both, in frpc's order for a CPU with AES instructions.
    pub const ALL: [Algorithm; 2] = [Algorithm::Aes256Gcm, Algorithm::XChaCha20Poly1305];

    /// The name in the hellos.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Aes256Gcm => "aes-256-gcm",
            Algorithm::XChaCha20Poly1305 => "xchacha20-poly1305",
        }
    }

    /// The algorithm a hello names, if this client has it.
    pub fn from_name(name: &str) -> Option<Algorithm> {
        Self::ALL.into_iter().find(|a| a.name() == name)
    }

    /// Nonce length: the stream's first nonce is sent in clear before its first record.
    pub fn nonce_len(self) -> usize {
        match self {
            Algorithm::Aes256Gcm => 12,
            Algorithm::XChaCha20Poly1305 => 24,
        }
    }
}

/// What the client tells frps about how it connected (`ClientHello.bootstrap`; frps only logs it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Bootstrap {
    /// `transport.protocol`: `tcp`, `websocket`, `wss`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub transport: String,
    /// TLS to frps.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub tls: bool,
    /// yamux.
    #[serde(rename = "tcpMux", skip_serializing_if = "std::ops::Not::not")]
    pub tcp_mux: bool,
}

/// The ClientHello payload: field for field what frpc sends (frps hashes the exact bytes, so
/// they need not match frpc's, but matching keeps captures comparable).
pub fn client_hello(bootstrap: &Bootstrap, offered: &[Algorithm], client_random: &[u8; RANDOM_LEN]) -> Vec<u8> {
    #[derive(Serialize)]
    struct Hello<'a> {
        bootstrap: &'a Bootstrap,
        capabilities: Caps,
    }
    #[derive(Serialize)]
    struct Caps {
        message: MessageCaps,
        crypto: CryptoCaps,
    }
    #[derive(Serialize)]
    struct MessageCaps {
        codecs: [&'static str; 1],
    }
    #[derive(Serialize)]
    struct CryptoCaps {
        algorithms: Vec<&'static str>,
        #[serde(rename = "clientRandom")]
        client_random: String,
    }
    let hello = Hello {
        bootstrap,
        capabilities: Caps {
            message: MessageCaps { codecs: ["json"] },
            crypto: CryptoCaps {
                algorithms: offered.iter().map(|a| a.name()).collect(),
                client_random: base64::engine::general_purpose::STANDARD.encode(client_random),
            },
        },
    };
    serde_json::to_vec(&hello).expect("a hello of strings serialises")
}

/// Checks a ServerHello payload against what was offered; returns the chosen algorithm.
pub fn check_server_hello(payload: &[u8], offered: &[Algorithm]) -> Result<Algorithm, WireError> {
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Hello {
        selected: Selected,
        error: Option<String>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct Selected {
        message: MessageSel,
        crypto: CryptoSel,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct MessageSel {
        codec: Option<String>,
    }
    #[derive(Deserialize, Default)]
    #[serde(default)]
    struct CryptoSel {
        algorithm: Option<String>,
        #[serde(rename = "serverRandom")]
        server_random: Option<String>,
    }
    let hello: Hello = serde_json::from_slice(payload).map_err(|e| WireError::BadHello(e.to_string()))?;
    if let Some(e) = hello.error.filter(|e| !e.is_empty()) {
        return Err(WireError::HelloRefused(e));
    }
    let codec = hello.selected.message.codec.unwrap_or_default();
    if codec != "json" {
        return Err(WireError::Codec(codec));
    }
    let name = hello.selected.crypto.algorithm.unwrap_or_default();
    let algorithm = Algorithm::from_name(&name).filter(|a| offered.contains(a)).ok_or(WireError::Algorithm(name))?;
    let random = base64::engine::general_purpose::STANDARD
        .decode(hello.selected.crypto.server_random.unwrap_or_default())
        .map_err(|e| WireError::BadHello(format!("serverRandom is not base64: {e}")))?;
    if random.len() != RANDOM_LEN {
        return Err(WireError::ServerRandom(random.len()));
    }
    Ok(algorithm)
}

/// SHA-256 over a label and both hello payloads, each with its label and length.
pub fn transcript_hash(client_hello: &[u8], server_hello: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(b"frp wire v2 crypto transcript");
    for (label, payload) in [(&b"client hello"[..], client_hello), (b"server hello", server_hello)] {
        h.update([0]);
        h.update(label);
        h.update([0]);
        h.update((payload.len() as u64).to_be_bytes());
        h.update(payload);
    }
    h.finalize().into()
}

/// The control channel's two keys.
#[derive(Clone, PartialEq, Eq)]
pub struct Keys {
    /// Client → server.
    pub client_to_server: [u8; 32],
    /// Server → client.
    pub server_to_client: [u8; 32],
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys(..)")
    }
}

/// HKDF-SHA256 of the token, salted with the transcript hash, one key per direction.
pub fn control_keys(token: &[u8], algorithm: Algorithm, transcript: &[u8; 32]) -> Keys {
    let hk = hkdf::Hkdf::<Sha256>::new(Some(transcript), token);
    let key = |direction: &str| {
        let info = format!("frp wire v2 control aead {} {direction}", algorithm.name());
        let mut k = [0u8; 32];
        hk.expand(info.as_bytes(), &mut k).expect("32 bytes is a valid HKDF-SHA256 length");
        k
    };
    Keys { client_to_server: key("client-to-server"), server_to_client: key("server-to-client") }
}

enum Cipher {
    Aes(Box<aes_gcm::Aes256Gcm>),
    XChaCha(Box<chacha20poly1305::XChaCha20Poly1305>),
}

impl Cipher {
    fn new(algorithm: Algorithm, key: &[u8; 32]) -> Self {
        match algorithm {
            Algorithm::Aes256Gcm => Cipher::Aes(Box::new(aes_gcm::Aes256Gcm::new(key.into()))),
            Algorithm::XChaCha20Poly1305 => {
                Cipher::XChaCha(Box::new(chacha20poly1305::XChaCha20Poly1305::new(key.into())))
            }
        }
    }

    fn seal(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8]) -> [u8; TAG_LEN] {
        let tag = match self {
            Cipher::Aes(c) => c.encrypt_in_place_detached(aes_gcm::Nonce::from_slice(nonce), aad, buf),
            Cipher::XChaCha(c) => c.encrypt_in_place_detached(chacha20poly1305::XNonce::from_slice(nonce), aad, buf),
        };
        // Only a plaintext beyond the algorithm's limit (64 GiB) fails; records are ≤ 64 KiB.
        tag.expect("a record is far below the AEAD's length limit").into()
    }

    fn open(&self, nonce: &[u8], aad: &[u8], buf: &mut [u8], tag: &[u8]) -> Result<(), WireError> {
        let r = match self {
            Cipher::Aes(c) => {
                c.decrypt_in_place_detached(aes_gcm::Nonce::from_slice(nonce), aad, buf, aes_gcm::Tag::from_slice(tag))
            }
            Cipher::XChaCha(c) => c.decrypt_in_place_detached(
                chacha20poly1305::XNonce::from_slice(nonce),
                aad,
                buf,
                chacha20poly1305::Tag::from_slice(tag),
            ),
        };
        r.map_err(|_| WireError::Authentication)
    }
}

/// Adds one to a big-endian nonce; `false` when it wrapped.
fn increment(nonce: &mut [u8]) -> bool {
    for b in nonce.iter_mut().rev() {
        *b = b.wrapping_add(1);
        if *b != 0 {
            return true;
        }
    }
    false
}

fn record_limit(algorithm: Algorithm) -> u64 {
    match algorithm {
        Algorithm::Aes256Gcm => AES_GCM_RECORD_LIMIT,
        Algorithm::XChaCha20Poly1305 => u64::MAX,
    }
}

/// The writing half of an AEAD stream: `nonce0` once, then records `u32 length ‖ sealed bytes`,
/// each authenticated with `nonce0 ‖ length` and the record's own nonce (`nonce0 + index`).
pub struct Sealer {
    cipher: Cipher,
    nonce0: Vec<u8>,
    nonce: Vec<u8>,
    records: u64,
    limit: u64,
    started: bool,
}

impl Sealer {
    /// A sealer whose stream starts with `nonce0` (random in production; its length is
    /// [`Algorithm::nonce_len`], the rest of a longer slice is ignored).
    pub fn new(algorithm: Algorithm, key: &[u8; 32], nonce0: &[u8]) -> Self {
        let nonce0 = nonce0[..algorithm.nonce_len()].to_vec();
        Self {
            cipher: Cipher::new(algorithm, key),
            nonce: nonce0.clone(),
            nonce0,
            records: 0,
            limit: record_limit(algorithm),
            started: false,
        }
    }

    /// Appends `plain` sealed to `out`, in records of at most [`MAX_PAYLOAD`] bytes.
    pub fn seal(&mut self, plain: &[u8], out: &mut Vec<u8>) -> Result<(), WireError> {
        if !self.started {
            out.extend_from_slice(&self.nonce0);
            self.started = true;
        }
        for chunk in plain.chunks(MAX_PAYLOAD) {
            if self.records >= self.limit {
                return Err(WireError::Exhausted);
            }
            let len = ((chunk.len() + TAG_LEN) as u32).to_be_bytes();
            let aad = [&self.nonce0[..], &len].concat();
            out.extend_from_slice(&len);
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self.cipher.seal(&self.nonce, &aad, &mut out[start..]);
            out.extend_from_slice(&tag);
            if !increment(&mut self.nonce) {
                return Err(WireError::Exhausted);
            }
            self.records += 1;
        }
        Ok(())
    }
}

/// The reading half of an AEAD stream; takes any slicing of the input and buffers at most one
/// record (64 KiB + 16).
pub struct Opener {
    cipher: Cipher,
    nonce0: Vec<u8>,
    nonce: Vec<u8>,
    nonce_len: usize,
    header: [u8; 4],
    header_len: usize,
    record: Vec<u8>,
    record_len: usize,
    records: u64,
    limit: u64,
}

impl Opener {
    /// An opener that reads the stream's `nonce0` from its first bytes.
    pub fn new(algorithm: Algorithm, key: &[u8; 32]) -> Self {
        Self {
            cipher: Cipher::new(algorithm, key),
            nonce0: Vec::with_capacity(algorithm.nonce_len()),
            nonce: Vec::new(),
            nonce_len: algorithm.nonce_len(),
            header: [0; 4],
            header_len: 0,
            record: Vec::new(),
            record_len: 0,
            records: 0,
            limit: record_limit(algorithm),
        }
    }

    /// Whether the stream is between records (a clean place for it to end).
    pub fn is_idle(&self) -> bool {
        self.header_len == 0 && (self.nonce0.is_empty() || self.nonce0.len() == self.nonce_len)
    }

    /// Consumes all of `input`, appending the plaintext of each completed record to `plain`.
    /// After an error the opener must not be used again.
    pub fn open(&mut self, mut input: &[u8], plain: &mut Vec<u8>) -> Result<(), WireError> {
        while !input.is_empty() {
            if self.nonce0.len() < self.nonce_len {
                let n = (self.nonce_len - self.nonce0.len()).min(input.len());
                self.nonce0.extend_from_slice(&input[..n]);
                input = &input[n..];
                self.nonce.clone_from(&self.nonce0);
                continue;
            }
            if self.header_len < 4 {
                let n = (4 - self.header_len).min(input.len());
                self.header[self.header_len..self.header_len + n].copy_from_slice(&input[..n]);
                self.header_len += n;
                input = &input[n..];
                if self.header_len < 4 {
                    return Ok(());
                }
                if self.records >= self.limit {
                    return Err(WireError::Exhausted);
                }
                let len = u32::from_be_bytes(self.header);
                if (len as usize) < TAG_LEN || len as usize > MAX_PAYLOAD + TAG_LEN {
                    return Err(WireError::RecordLength(len));
                }
                self.record_len = len as usize;
                self.record.clear();
                self.record.reserve(self.record_len);
            }
            let n = (self.record_len - self.record.len()).min(input.len());
            self.record.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.record.len() < self.record_len {
                return Ok(());
            }
            let aad = [&self.nonce0[..], &self.header].concat();
            let (body, tag) = self.record.split_at_mut(self.record_len - TAG_LEN);
            self.cipher.open(&self.nonce, &aad, body, tag)?;
            plain.extend_from_slice(body);
            if !increment(&mut self.nonce) {
                return Err(WireError::Exhausted);
            }
            self.records += 1;
            self.header_len = 0;
        }
        Ok(())
    }
}

/// The control connection in wire v2: magic and ClientHello before `Login`, ServerHello before
/// `LoginResp`, both plain; AEAD both ways after it.
pub struct V2Codec {
    token: Vec<u8>,
    client_hello: Vec<u8>,
    offered: Vec<Algorithm>,
    nonce_seed: [u8; 24],
    greeted: bool,
    keys: Option<(Algorithm, Keys)>,
    frames: FrameDecoder,
    seal: Option<Sealer>,
    open: Option<Opener>,
    plain: Vec<u8>,
    used: usize,
}

impl V2Codec {
    /// A codec for a client with `token` that offers `offered` (in preference order). The
    /// randomness comes from the caller: the hello's `client_random`, and the seed of this
    /// side's first AEAD nonce (its first 12 or 24 bytes).
    pub fn new(
        token: &str,
        bootstrap: &Bootstrap,
        offered: &[Algorithm],
        client_random: [u8; RANDOM_LEN],
        nonce_seed: [u8; 24],
    ) -> Self {
        Self {
            token: token.as_bytes().to_vec(),
            client_hello: client_hello(bootstrap, offered, &client_random),
            offered: offered.to_vec(),
            nonce_seed,
            greeted: false,
            keys: None,
            frames: FrameDecoder::new(),
            seal: None,
            open: None,
            plain: Vec::new(),
            used: 0,
        }
    }

    /// The algorithm frps chose, once its hello is in.
    pub fn algorithm(&self) -> Option<Algorithm> {
        self.keys.as_ref().map(|(a, _)| *a)
    }
}

impl Codec for V2Codec {
    fn encode(&mut self, msg: &Message, out: &mut Vec<u8>) -> Result<(), MessageError> {
        if !self.greeted {
            out.extend_from_slice(&MAGIC);
            encode_frame(CLIENT_HELLO, &self.client_hello, out)?;
            self.greeted = true;
        }
        match &mut self.seal {
            None => encode_message(msg, out)?,
            Some(seal) => {
                let mut frame = Vec::new();
                encode_message(msg, &mut frame)?;
                seal.seal(&frame, out)?;
            }
        }
        Ok(())
    }

    fn decode(&mut self, input: &mut &[u8]) -> Result<Option<Message>, MessageError> {
        if let Some(open) = &mut self.open {
            open.open(input, &mut self.plain)?;
            *input = &[];
            let (n, frame) = self.frames.decode(&self.plain[self.used..])?;
            self.used += n;
            if self.used == self.plain.len() {
                self.plain.clear();
                self.used = 0;
            }
            return frame.map(|f| parse_message(&f)).transpose();
        }
        // Plain frames, one at a time: what follows `LoginResp` is the AEAD stream.
        loop {
            let (n, frame) = self.frames.decode(input)?;
            *input = &input[n..];
            let Some(frame) = frame else { return Ok(None) };
            if self.keys.is_some() {
                return parse_message(&frame).map(Some);
            }
            if frame.ty != SERVER_HELLO {
                return Err(WireError::UnexpectedFrame { got: frame.ty, want: SERVER_HELLO }.into());
            }
            let algorithm = check_server_hello(&frame.body, &self.offered)?;
            let transcript = transcript_hash(&self.client_hello, &frame.body);
            self.keys = Some((algorithm, control_keys(&self.token, algorithm, &transcript)));
        }
    }

    fn logged_in(&mut self) {
        // A LoginResp is only read after the ServerHello, so the keys are there.
        if let Some((algorithm, keys)) = &self.keys {
            self.seal = Some(Sealer::new(*algorithm, &keys.client_to_server, &self.nonce_seed));
            self.open = Some(Opener::new(*algorithm, &keys.server_to_client));
        }
    }

    fn awaiting_hello(&self) -> bool {
        self.keys.is_none()
    }

    fn mid_frame(&self) -> bool {
        !self.frames.is_idle() || self.open.as_ref().is_some_and(|o| !o.is_idle())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{Login, LoginResp, NewWorkConn, Ping};
    use crate::MsgType;

    /// A real session between frpc 0.70.1 and frps 0.70.1 (`tests/data/v2/capture.py`).
    struct Capture {
        alg: Algorithm,
        control_c2s: &'static [u8],
        control_s2c: &'static [u8],
        work_c2s: &'static [u8],
        work_s2c: &'static [u8],
    }

    const TOKEN: &str = "golden-v2-token";

    macro_rules! capture {
        ($dir:literal, $alg:expr) => {
            Capture {
                alg: $alg,
                control_c2s: include_bytes!(concat!("../tests/data/v2/", $dir, "/control.c2s")),
                control_s2c: include_bytes!(concat!("../tests/data/v2/", $dir, "/control.s2c")),
                work_c2s: include_bytes!(concat!("../tests/data/v2/", $dir, "/work.c2s")),
                work_s2c: include_bytes!(concat!("../tests/data/v2/", $dir, "/work.s2c")),
            }
        };
    }

    fn captures() -> [Capture; 2] {
        [capture!("0.70.1-aes", Algorithm::Aes256Gcm), capture!("0.70.1-xchacha", Algorithm::XChaCha20Poly1305)]
    }

    /// The first `count` frames of `bytes`, and the bytes after them.
    fn frames(mut bytes: &[u8], count: usize) -> (Vec<Frame>, &[u8]) {
        let mut out = Vec::new();
        let mut dec = FrameDecoder::new();
        while out.len() < count {
            let (n, f) = dec.decode(bytes).unwrap();
            bytes = &bytes[n..];
            out.extend(f);
        }
        (out, bytes)
    }

    fn messages(mut plain: &[u8]) -> Vec<Message> {
        let mut out = Vec::new();
        let mut dec = FrameDecoder::new();
        while !plain.is_empty() {
            let (n, f) = dec.decode(plain).unwrap();
            plain = &plain[n..];
            out.extend(f.map(|f| parse_message(&f).unwrap()));
        }
        assert!(dec.is_idle(), "the stream ends between frames");
        out
    }

    fn client_random(hello: &[u8]) -> [u8; RANDOM_LEN] {
        let v: serde_json::Value = serde_json::from_slice(hello).unwrap();
        let r = v["capabilities"]["crypto"]["clientRandom"].as_str().unwrap();
        base64::engine::general_purpose::STANDARD.decode(r).unwrap().try_into().unwrap()
    }

    #[test]
    fn golden_control_session_decodes_both_ways() {
        for cap in captures() {
            let c2s = cap.control_c2s.strip_prefix(&MAGIC).expect("the magic comes first");
            let (out, c2s_sealed) = frames(c2s, 2);
            assert_eq!(out[0].ty, CLIENT_HELLO);
            let Message::Login(login) = parse_message(&out[1]).unwrap() else { panic!("{:?}", out[1]) };
            assert_eq!(login.privilege_key, crate::auth::privilege_key(TOKEN, login.timestamp));
            let (back, s2c_sealed) = frames(cap.control_s2c, 2);
            assert_eq!(back[0].ty, SERVER_HELLO);
            let Message::LoginResp(resp) = parse_message(&back[1]).unwrap() else { panic!() };
            assert!(resp.error.is_empty() && !resp.run_id.is_empty());

            let alg = check_server_hello(&back[0].body, &Algorithm::ALL).unwrap();
            assert_eq!(alg, cap.alg);
            let keys = control_keys(TOKEN.as_bytes(), alg, &transcript_hash(&out[0].body, &back[0].body));
            let mut plain = Vec::new();
            Opener::new(alg, &keys.client_to_server).open(c2s_sealed, &mut plain).unwrap();
            let sent: Vec<MsgType> = messages(&plain).iter().map(Message::msg_type).collect();
            assert_eq!(sent[0], MsgType::NewProxy, "{sent:?}");
            assert!(sent.contains(&MsgType::Ping), "{sent:?}");
            let mut plain = Vec::new();
            Opener::new(alg, &keys.server_to_client).open(s2c_sealed, &mut plain).unwrap();
            let got = messages(&plain);
            let up = got.iter().find_map(|m| if let Message::NewProxyResp(r) = m { Some(r) } else { None });
            let up = up.unwrap_or_else(|| panic!("{got:?}"));
            assert_eq!(up.proxy_name, "web");
            assert!(up.remote_addr.starts_with("golden.burrow.test:") && up.error.is_empty(), "{up:?}");
            assert!(got.iter().any(|m| matches!(m, Message::ReqWorkConn(_))), "{got:?}");
        }
    }

    #[test]
    fn golden_records_are_what_the_sealer_writes() {
        // frpc writes a frame's header and payload as two records; sealing the same pieces with
        // the same first nonce reproduces its bytes exactly.
        for cap in captures() {
            let (out, sealed) = frames(&cap.control_c2s[MAGIC.len()..], 2);
            let (back, _) = frames(cap.control_s2c, 2);
            let alg = cap.alg;
            let keys = control_keys(TOKEN.as_bytes(), alg, &transcript_hash(&out[0].body, &back[0].body));
            let mut plain = Vec::new();
            Opener::new(alg, &keys.client_to_server).open(sealed, &mut plain).unwrap();
            let mut sealer = Sealer::new(alg, &keys.client_to_server, &sealed[..alg.nonce_len()]);
            let mut again = Vec::new();
            let mut rest = &plain[..];
            while !rest.is_empty() {
                let len = u32::from_be_bytes(rest[4..8].try_into().unwrap()) as usize;
                sealer.seal(&rest[..HEADER_LEN], &mut again).unwrap();
                sealer.seal(&rest[HEADER_LEN..HEADER_LEN + len], &mut again).unwrap();
                rest = &rest[HEADER_LEN + len..];
            }
            assert_eq!(again, sealed);
        }
    }

    #[test]
    fn the_codec_says_frpcs_hello_and_reads_frps_answers() {
        for cap in captures() {
            let (out, _) = frames(&cap.control_c2s[MAGIC.len()..], 1);
            let offered: Vec<Algorithm> = {
                let v: serde_json::Value = serde_json::from_slice(&out[0].body).unwrap();
                v["capabilities"]["crypto"]["algorithms"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|a| Algorithm::from_name(a.as_str().unwrap()).unwrap())
                    .collect()
            };
            let bootstrap = Bootstrap { transport: "tcp".into(), ..Default::default() };
            let mut codec = V2Codec::new(TOKEN, &bootstrap, &offered, client_random(&out[0].body), [9; 24]);
            let mut wire = Vec::new();
            codec.encode(&Message::Login(Login::default()), &mut wire).unwrap();
            // Byte for byte frpc's opening: the same hello from the same random.
            let hello_len = MAGIC.len() + HEADER_LEN + out[0].body.len();
            assert_eq!(wire[..hello_len], cap.control_c2s[..hello_len]);

            // frps' answers, in any slicing: hello and LoginResp plain, then AEAD.
            for chunk in [1, 7, 64, cap.control_s2c.len()] {
                let mut codec = V2Codec::new(TOKEN, &bootstrap, &offered, client_random(&out[0].body), [9; 24]);
                codec.encode(&Message::Login(Login::default()), &mut Vec::new()).unwrap();
                assert!(codec.awaiting_hello());
                let mut got = Vec::new();
                for piece in cap.control_s2c.chunks(chunk) {
                    let mut input = piece;
                    while let Some(m) = codec.decode(&mut input).unwrap() {
                        if matches!(m, Message::LoginResp(_)) {
                            codec.logged_in();
                        }
                        got.push(m.msg_type());
                    }
                    assert!(input.is_empty());
                }
                assert_eq!(codec.algorithm(), Some(cap.alg));
                assert!(!codec.awaiting_hello() && !codec.mid_frame());
                assert_eq!(got[0], MsgType::LoginResp, "chunk {chunk}");
                assert!(got.contains(&MsgType::NewProxyResp) && got.contains(&MsgType::Pong), "chunk {chunk}: {got:?}");
            }
        }
    }

    #[test]
    fn golden_work_connection() {
        for cap in captures() {
            let c2s = cap.work_c2s.strip_prefix(&MAGIC).unwrap();
            let (out, raw) = frames(c2s, 1);
            let Message::NewWorkConn(hello) = parse_message(&out[0]).unwrap() else { panic!() };
            assert!(!hello.run_id.is_empty());
            assert!(raw.starts_with(b"HTTP/1.1 200 OK"));
            let mut again = MAGIC.to_vec();
            encode_message(
                &Message::NewWorkConn(NewWorkConn { run_id: hello.run_id, ..Default::default() }),
                &mut again,
            )
            .unwrap();
            assert_eq!(again, cap.work_c2s[..cap.work_c2s.len() - raw.len()]);
            let (back, raw) = frames(cap.work_s2c, 1);
            let Message::StartWorkConn(start) = parse_message(&back[0]).unwrap() else { panic!() };
            assert_eq!(start.proxy_name, "web");
            assert!(raw.starts_with(b"GET / HTTP/1.1\r\n"));
        }
    }

    fn server_hello(alg: &str, random: &[u8]) -> Vec<u8> {
        let r = base64::engine::general_purpose::STANDARD.encode(random);
        format!(
            r#"{{"selected":{{"message":{{"codec":"json"}},"crypto":{{"algorithm":"{alg}","serverRandom":"{r}"}}}}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn hostile_hellos_are_named_errors() {
        let only_aes = [Algorithm::Aes256Gcm];
        let ok = server_hello("aes-256-gcm", &[1; 32]);
        assert_eq!(check_server_hello(&ok, &only_aes), Ok(Algorithm::Aes256Gcm));
        for (hello, want) in [
            (server_hello("rot13", &[1; 32]), WireError::Algorithm("rot13".into())),
            (server_hello("xchacha20-poly1305", &[1; 32]), WireError::Algorithm("xchacha20-poly1305".into())),
            (server_hello("aes-256-gcm", &[1; 31]), WireError::ServerRandom(31)),
            (
                br#"{"selected":{"message":{"codec":"json"},"crypto":{}},"error":"no supported crypto algorithm"}"#
                    .to_vec(),
                WireError::HelloRefused("no supported crypto algorithm".into()),
            ),
            (br#"{"selected":{"message":{"codec":"msgpack"}}}"#.to_vec(), WireError::Codec("msgpack".into())),
        ] {
            assert_eq!(check_server_hello(&hello, &only_aes), Err(want));
        }
        for bad in [&b"[1,2]"[..], b"", b"{\"selected\":7}", b"{\"selected\":{\"crypto\":{\"algorithm\":\"aes-256-gcm\",\"serverRandom\":\"!!\"},\"message\":{\"codec\":\"json\"}}}"] {
            assert!(matches!(check_server_hello(bad, &only_aes), Err(WireError::BadHello(_))), "{bad:?}");
        }
    }

    /// A codec that has sent its hello and Login.
    fn greeted() -> V2Codec {
        let mut c = V2Codec::new("t", &Bootstrap::default(), &Algorithm::ALL, [5; 32], [6; 24]);
        c.encode(&Message::Login(Login::default()), &mut Vec::new()).unwrap();
        c
    }

    fn decode_all(codec: &mut V2Codec, bytes: &[u8]) -> Result<Vec<Message>, MessageError> {
        let mut input = bytes;
        let mut out = Vec::new();
        while let Some(m) = codec.decode(&mut input)? {
            if matches!(m, Message::LoginResp(_)) {
                codec.logged_in();
            }
            out.push(m);
        }
        Ok(out)
    }

    /// What frps sends to [`greeted`]: its hello, LoginResp, and then `sealed` messages.
    fn frps_answer(sealed: &[Message]) -> (Vec<u8>, Sealer) {
        let sh = server_hello("aes-256-gcm", &[8; 32]);
        let ch = client_hello(&Bootstrap::default(), &Algorithm::ALL, &[5; 32]);
        let keys = control_keys(b"t", Algorithm::Aes256Gcm, &transcript_hash(&ch, &sh));
        let mut out = Vec::new();
        encode_frame(SERVER_HELLO, &sh, &mut out).unwrap();
        let resp = LoginResp { version: "0.70.1".into(), run_id: "r".into(), error: String::new() };
        encode_message(&Message::LoginResp(resp), &mut out).unwrap();
        let mut sealer = Sealer::new(Algorithm::Aes256Gcm, &keys.server_to_client, &[4; 12]);
        for m in sealed {
            let mut f = Vec::new();
            encode_message(m, &mut f).unwrap();
            sealer.seal(&f, &mut out).unwrap();
        }
        (out, sealer)
    }

    fn err(r: Result<Vec<Message>, MessageError>) -> WireError {
        match r {
            Err(MessageError::Wire(e)) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_frames_and_records_are_named_errors() {
        let pong = Message::Pong(Default::default());
        let (good, _) = frps_answer(std::slice::from_ref(&pong));
        assert_eq!(decode_all(&mut greeted(), &good).unwrap().len(), 2);

        // A frame type other than ServerHello first; flags; an oversized length (refused on
        // the header, before any payload is buffered).
        let mut f = Vec::new();
        encode_message(&pong, &mut f).unwrap();
        assert_eq!(
            err(decode_all(&mut greeted(), &f)),
            WireError::UnexpectedFrame { got: MESSAGE, want: SERVER_HELLO }
        );
        assert_eq!(err(decode_all(&mut greeted(), &[0, 2, 0, 1, 0, 0, 0, 0])), WireError::Flags(1));
        assert_eq!(
            err(decode_all(&mut greeted(), &[0, 2, 0, 0, 0xff, 0xff, 0xff, 0xff])),
            WireError::TooLong(0xffff_ffff)
        );
        assert_eq!(err(decode_all(&mut greeted(), &[0, 2, 0, 0, 0, 1, 0, 1])), WireError::TooLong(65537));

        // After the login: a record whose tag does not verify, a record length out of range,
        // a message id frp does not define.
        let login_len = good.len() - (12 + 4 + HEADER_LEN + 2 + 2 + TAG_LEN);
        let mut tampered = good.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(err(decode_all(&mut greeted(), &tampered)), WireError::Authentication);
        let mut tampered = good.clone();
        tampered[login_len + 12 + 4] ^= 0x80;
        assert_eq!(err(decode_all(&mut greeted(), &tampered)), WireError::Authentication);
        for len in [15u32, 65553, u32::MAX] {
            let mut bad = good[..login_len + 12].to_vec();
            bad.extend_from_slice(&len.to_be_bytes());
            assert_eq!(err(decode_all(&mut greeted(), &bad)), WireError::RecordLength(len));
        }
        let (mut bad, mut sealer) = frps_answer(&[]);
        sealer.seal(&[0, 16, 0, 0, 0, 0, 0, 2, 0, 99], &mut bad).unwrap();
        assert_eq!(err(decode_all(&mut greeted(), &bad)), WireError::UnknownMessage(99));
        let (mut bad, mut sealer) = frps_answer(&[]);
        sealer.seal(&[0, 16, 0, 0, 0, 0, 0, 1, 0], &mut bad).unwrap();
        assert_eq!(err(decode_all(&mut greeted(), &bad)), WireError::ShortMessage(1));

        // A record cut short is not an error yet, but the codec knows it is mid-record.
        let mut codec = greeted();
        decode_all(&mut codec, &good[..good.len() - 3]).unwrap();
        assert!(codec.mid_frame());
        let mut codec = greeted();
        decode_all(&mut codec, &good).unwrap();
        assert!(!codec.mid_frame());
    }

    #[test]
    fn the_first_records_carry_the_nonce_and_ping_round_trips() {
        let mut codec = greeted();
        let (answer, _) = frps_answer(&[]);
        decode_all(&mut codec, &answer).unwrap();
        let mut out = Vec::new();
        codec.encode(&Message::Ping(Ping::default()), &mut out).unwrap();
        codec.encode(&Message::Ping(Ping::default()), &mut out).unwrap();
        assert_eq!(out[..12], [6; 12], "the first 12 bytes of the seed, in clear");
        let ch = client_hello(&Bootstrap::default(), &Algorithm::ALL, &[5; 32]);
        let keys =
            control_keys(b"t", Algorithm::Aes256Gcm, &transcript_hash(&ch, &server_hello("aes-256-gcm", &[8; 32])));
        let mut plain = Vec::new();
        Opener::new(Algorithm::Aes256Gcm, &keys.client_to_server).open(&out, &mut plain).unwrap();
        assert_eq!(messages(&plain), [Message::Ping(Ping::default()), Message::Ping(Ping::default())]);
    }

    #[test]
    fn big_writes_are_split_into_records_of_at_most_64_kib() {
        let key = [3; 32];
        let plain: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut sealer = Sealer::new(Algorithm::XChaCha20Poly1305, &key, &[1; 24]);
        let mut wire = Vec::new();
        sealer.seal(&plain, &mut wire).unwrap();
        assert_eq!(wire.len(), 24 + 4 * (4 + TAG_LEN) + plain.len());
        let mut back = Vec::new();
        let mut opener = Opener::new(Algorithm::XChaCha20Poly1305, &key);
        for piece in wire.chunks(4093) {
            opener.open(piece, &mut back).unwrap();
        }
        assert_eq!(back, plain);
        assert!(opener.is_idle());
    }

    #[test]
    fn nonces_count_big_endian_and_stop_at_the_wrap() {
        let mut n = [0, 0xff, 0xff];
        assert!(increment(&mut n));
        assert_eq!(n, [1, 0, 0]);
        let mut n = [0xff; 3];
        assert!(!increment(&mut n));
    }
}
