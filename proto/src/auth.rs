//! Token authentication and key derivation.

use md5::{Digest, Md5};

/// Salt frpc and frps set for golib's crypto at start-up (golib's own default is `"crypto"`).
pub const KEY_SALT: &[u8] = b"frp";
/// PBKDF2 iterations golib uses.
pub const KEY_ITERATIONS: u32 = 64;

/// `Login.privilege_key` (and the `NewWorkConn`/`Ping` keys when frps asks for them):
/// lowercase hex of `MD5(token ‖ decimal timestamp)`.
pub fn privilege_key(token: &str, timestamp: i64) -> String {
    let mut h = Md5::new();
    h.update(token.as_bytes());
    h.update(timestamp.to_string().as_bytes());
    let digest = h.finalize();
    let mut out = String::with_capacity(32);
    for b in digest {
        out.push(char::from_digit((b >> 4) as u32, 16).expect("nibble"));
        out.push(char::from_digit((b & 0xf) as u32, 16).expect("nibble"));
    }
    out
}

/// The AES-128 key of the stream cipher: `PBKDF2-HMAC-SHA1(token, "frp", 64, 16)`.
///
/// Deriving it costs 64 HMAC rounds; callers derive it once per token and keep it.
pub fn derive_key(token: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    pbkdf2::pbkdf2_hmac::<sha1::Sha1>(token.as_bytes(), KEY_SALT, KEY_ITERATIONS, &mut key);
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn privilege_key_matches_real_frpc() {
        assert_eq!(privilege_key("secret", 1795670360), "277fc2e21bb6fafe69511ad261707af4");
    }

    #[test]
    fn privilege_key_of_empty_token_is_md5_of_timestamp() {
        // md5("1") — an empty token is valid when both sides use it.
        assert_eq!(privilege_key("", 1), "c4ca4238a0b923820dcc509a6f75849b");
    }

    #[test]
    fn key_matches_real_frp() {
        assert_eq!(derive_key("secret"), *b"\x8a\x69\x21\x5e\x54\xac\xa5\x0e\x54\xf7\x38\xde\x61\x1a\x87\xf9");
    }
}
