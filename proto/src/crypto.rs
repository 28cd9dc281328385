//! AES-128-CFB stream encryption as frp applies it (golib `crypto.Writer`/`Reader`).
//!
//! Full-block (128-bit segment) CFB, no padding, no MAC. Each direction has its own random IV,
//! written in clear immediately before the first ciphertext byte. Both halves work in place on any
//! chunking of the stream, so the I/O layer never copies for the cipher's sake.

use aes::Aes128;
use cfb_mode::cipher::KeyIvInit;

/// Length of the key and of the IV.
pub const BLOCK: usize = 16;

/// Encrypting half. Send [`Encryptor::take_iv`] before the first ciphertext.
pub struct Encryptor {
    iv: Option<[u8; BLOCK]>,
    cipher: cfb_mode::BufEncryptor<Aes128>,
}

impl Encryptor {
    /// An encryptor with a caller-chosen IV (random in production, fixed in tests).
    pub fn new(key: &[u8; BLOCK], iv: [u8; BLOCK]) -> Self {
        Self { iv: Some(iv), cipher: cfb_mode::BufEncryptor::new(key.into(), &iv.into()) }
    }

    /// The IV, the first time it is asked for; `None` once it has been taken.
    pub fn take_iv(&mut self) -> Option<[u8; BLOCK]> {
        self.iv.take()
    }

    /// Encrypts `data` in place.
    pub fn encrypt(&mut self, data: &mut [u8]) {
        self.cipher.encrypt(data);
    }
}

/// Decrypting half: the first [`BLOCK`] bytes it sees are the peer's IV.
pub struct Decryptor {
    key: [u8; BLOCK],
    iv: [u8; BLOCK],
    iv_len: usize,
    cipher: Option<cfb_mode::BufDecryptor<Aes128>>,
}

impl Decryptor {
    /// A decryptor that will read the IV from the stream.
    pub fn new(key: &[u8; BLOCK]) -> Self {
        Self { key: *key, iv: [0; BLOCK], iv_len: 0, cipher: None }
    }

    /// Decrypts `data` in place and returns the offset where plaintext starts: bytes before it
    /// were (part of) the IV and carry no data.
    pub fn decrypt(&mut self, data: &mut [u8]) -> usize {
        let mut start = 0;
        if self.cipher.is_none() {
            let n = (BLOCK - self.iv_len).min(data.len());
            self.iv[self.iv_len..self.iv_len + n].copy_from_slice(&data[..n]);
            self.iv_len += n;
            start = n;
            if self.iv_len < BLOCK {
                return start;
            }
            self.cipher = Some(cfb_mode::BufDecryptor::new((&self.key).into(), (&self.iv).into()));
        }
        if let Some(c) = &mut self.cipher {
            c.decrypt(&mut data[start..]);
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::derive_key;

    #[test]
    fn cfb128_known_answer() {
        // NIST SP 800-38A F.3.13 CFB128-AES128.Encrypt.
        let key = *b"\x2b\x7e\x15\x16\x28\xae\xd2\xa6\xab\xf7\x15\x88\x09\xcf\x4f\x3c";
        let iv = *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
        let mut data = *b"\x6b\xc1\xbe\xe2\x2e\x40\x9f\x96\xe9\x3d\x7e\x11\x73\x93\x17\x2a\xae\x2d\x8a\x57\x1e\x03\xac\x9c\x9e\xb7\x6f\xac\x45\xaf\x8e\x51";
        let mut enc = Encryptor::new(&key, iv);
        enc.encrypt(&mut data[..5]);
        enc.encrypt(&mut data[5..]);
        assert_eq!(&data, b"\x3b\x3f\xd9\x2e\xb7\x2d\xad\x20\x33\x34\x49\xf8\xe8\x3c\xfb\x4a\xc8\xa6\x45\x37\xa0\xb3\xa9\x3f\xcd\xe3\xcd\xad\x9f\x1c\xe5\x8b");
    }

    #[test]
    fn any_chunking_round_trips_with_iv_prefix() {
        let key = derive_key("secret");
        let plain: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut enc = Encryptor::new(&key, [9; BLOCK]);
        let mut wire = enc.take_iv().unwrap().to_vec();
        assert!(enc.take_iv().is_none());
        let mut body = plain.clone();
        for chunk in body.chunks_mut(13) {
            enc.encrypt(chunk);
        }
        wire.extend_from_slice(&body);
        for step in [1usize, 3, 16, 17, 999, 2000] {
            let mut dec = Decryptor::new(&key);
            let mut out = Vec::new();
            for chunk in wire.clone().chunks_mut(step) {
                let start = dec.decrypt(chunk);
                out.extend_from_slice(&chunk[start..]);
            }
            assert_eq!(out, plain, "step {step}");
        }
    }
}
