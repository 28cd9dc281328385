//! The wire v2 AEAD stream: sealed data opens to itself in any slicing, a flipped bit is always
//! an authentication or length error, and arbitrary bytes never panic nor yield more plaintext
//! than they could carry.
#![no_main]

use burrow_proto::v2::{Algorithm, Opener, Sealer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let alg = if data[0] & 1 == 0 { Algorithm::Aes256Gcm } else { Algorithm::XChaCha20Poly1305 };
    let step = data[1] as usize % 50 + 1;
    let flip = data[2] as usize;
    let plain = &data[3..];
    let key = [data[0]; 32];

    // A first nonce of all ones wraps after one record, which both sides refuse (as frp does).
    let mut sealer = Sealer::new(alg, &key, &[data[1] & 0x7f; 24]);
    let mut wire = Vec::new();
    // Two writes, as frp writes a frame's header and payload.
    let (a, b) = plain.split_at(plain.len() / 2);
    sealer.seal(a, &mut wire).unwrap();
    sealer.seal(b, &mut wire).unwrap();
    let mut opener = Opener::new(alg, &key);
    let mut out = Vec::new();
    for chunk in wire.chunks(step) {
        opener.open(chunk, &mut out).unwrap();
    }
    assert_eq!(out, plain);
    assert!(opener.is_idle());

    // One bit flipped after the clear nonce: the stream no longer opens to the plaintext.
    if wire.len() > alg.nonce_len() {
        let i = alg.nonce_len() + flip % (wire.len() - alg.nonce_len());
        wire[i] ^= 1 << (flip % 8);
        let mut out = Vec::new();
        let r = Opener::new(alg, &key).open(&wire, &mut out);
        assert!(r.is_err() || out != plain, "a tampered stream opened cleanly");
    }

    // Arbitrary bytes: no panic; plaintext never exceeds the input.
    let mut out = Vec::new();
    let _ = Opener::new(alg, &key).open(plain, &mut out);
    assert!(out.len() <= plain.len());
});
