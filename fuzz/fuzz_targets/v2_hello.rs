//! The wire v2 login from the client's side, fed any server bytes: the ServerHello check and the
//! control codec (hello, LoginResp, then the AEAD stream) never panic, accept only an offered
//! algorithm, and decode the same messages whatever the slicing.
#![no_main]

use burrow_proto::codec::Codec;
use burrow_proto::v2::{self, Algorithm, Bootstrap, V2Codec};
use burrow_proto::Message;
use libfuzzer_sys::fuzz_target;

/// Messages (as their debug text) and whether an error ended them, for `data` in `step`-byte pieces.
fn run(data: &[u8], step: usize, offered: &[Algorithm]) -> (Vec<String>, bool) {
    let mut codec = V2Codec::new("fuzz-token", &Bootstrap::default(), offered, [7; 32], [9; 24]);
    codec.encode(&Message::Ping(Default::default()), &mut Vec::new()).expect("the hello encodes");
    let mut out = Vec::new();
    for chunk in data.chunks(step) {
        let mut input = chunk;
        loop {
            match codec.decode(&mut input) {
                Ok(Some(m)) => {
                    if matches!(m, Message::LoginResp(_)) {
                        codec.logged_in();
                    }
                    out.push(format!("{m:?}"));
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        assert!(input.is_empty(), "the codec left input unread without a message");
    }
    if let Some(a) = codec.algorithm() {
        assert!(offered.contains(&a), "chose {a:?}, offered {offered:?}");
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, data)) = data.split_first() else { return };
    let offered: &[Algorithm] = match seed % 3 {
        0 => &Algorithm::ALL,
        1 => &[Algorithm::Aes256Gcm],
        _ => &[Algorithm::XChaCha20Poly1305],
    };
    if let Ok(a) = v2::check_server_hello(data, offered) {
        assert!(offered.contains(&a));
    }
    let whole = run(data, data.len().max(1), offered);
    assert_eq!(whole, run(data, 1, offered));
    assert_eq!(whole, run(data, seed as usize % 61 + 1, offered));
});
