//! The AES-CFB reader: any slicing of the ciphertext decrypts to the plaintext, the IV bytes are
//! never handed out as data, and arbitrary bytes never panic.
#![no_main]

use burrow_proto::crypto::{Decryptor, Encryptor, BLOCK};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 * BLOCK + 1 {
        return;
    }
    let key: [u8; BLOCK] = data[..BLOCK].try_into().unwrap();
    let iv: [u8; BLOCK] = data[BLOCK..2 * BLOCK].try_into().unwrap();
    let step = data[2 * BLOCK] as usize % 40 + 1;
    let plain = &data[2 * BLOCK + 1..];

    let mut enc = Encryptor::new(&key, iv);
    let mut wire = enc.take_iv().unwrap().to_vec();
    assert!(enc.take_iv().is_none());
    let mut body = plain.to_vec();
    enc.encrypt(&mut body);
    wire.extend_from_slice(&body);

    let mut dec = Decryptor::new(&key);
    let mut out = Vec::new();
    for chunk in wire.chunks(step) {
        let mut c = chunk.to_vec();
        let start = dec.decrypt(&mut c);
        assert!(start <= c.len());
        out.extend_from_slice(&c[start..]);
    }
    assert_eq!(out, plain);

    // Arbitrary bytes as ciphertext: no panic, and at most input minus the IV comes out.
    let mut dec = Decryptor::new(&key);
    let mut raw = plain.to_vec();
    let start = dec.decrypt(&mut raw);
    assert_eq!(raw.len() - start, plain.len().saturating_sub(BLOCK));
});
