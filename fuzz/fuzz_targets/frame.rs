//! The v1 frame decoder on bytes from the server: never panics, never buffers more than one
//! capped frame, and gives the same frames whatever the slicing of the input.
#![no_main]

use burrow_proto::frame::{FrameDecoder, MAX_BODY_LEN};
use burrow_proto::Message;
use libfuzzer_sys::fuzz_target;

/// All frames (and the first error) from `data` fed in pieces of the given sizes.
fn run(data: &[u8], mut piece: impl FnMut() -> usize) -> (Vec<burrow_proto::frame::Frame>, bool) {
    let mut d = FrameDecoder::new();
    let mut frames = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let n = piece().clamp(1, rest.len());
        let mut chunk = &rest[..n];
        while !chunk.is_empty() {
            match d.decode(chunk) {
                Ok((used, frame)) => {
                    assert!(used <= chunk.len());
                    assert!(used > 0 || frame.is_some(), "decode made no progress");
                    chunk = &chunk[used..];
                    if let Some(f) = frame {
                        assert!(f.body.len() <= MAX_BODY_LEN);
                        frames.push(f);
                    }
                }
                Err(_) => return (frames, true),
            }
        }
        rest = &rest[n..];
    }
    (frames, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, data)) = data.split_first() else { return };
    let whole = run(data, || usize::MAX);
    let bytewise = run(data, || 1);
    let mut k = seed as usize;
    let uneven = run(data, || {
        k = (k * 31 + 7) % 97;
        k + 1
    });
    assert_eq!(whole, bytewise);
    assert_eq!(whole, uneven);
    for f in &whole.0 {
        // A message that parses re-encodes to a frame that parses to the same message.
        if let Ok(m) = Message::parse(f) {
            if let Ok(bytes) = m.to_bytes() {
                let (back, used) = Message::decode(&bytes).expect("re-encoded message parses").expect("whole frame");
                assert_eq!(used, bytes.len());
                assert_eq!(back, m);
            }
        }
    }
});
