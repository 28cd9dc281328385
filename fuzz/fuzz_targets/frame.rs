//! The frame decoders of both wire versions on bytes from the server: never panic, never buffer
//! more than one capped frame, give the same frames whatever the slicing of the input, and a
//! message that parses re-encodes to a frame that parses to the same message.
#![no_main]

use burrow_proto::frame::{Decoder, Frame, Header, V1, MAX_BODY_LEN};
use burrow_proto::v2::{self, V2};
use burrow_proto::Message;
use libfuzzer_sys::fuzz_target;

/// All frames (and whether an error ended them) from `data` fed in pieces of the given sizes.
fn run<H: Header>(data: &[u8], cap: usize, mut piece: impl FnMut() -> usize) -> (Vec<Frame<H::Type>>, bool) {
    let mut d = Decoder::<H>::new();
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
                        assert!(f.body.len() <= cap);
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

/// The same frames whole, byte by byte and in uneven pieces.
fn slicings<H: Header>(data: &[u8], seed: u8, cap: usize) -> Vec<Frame<H::Type>>
where
    H::Type: PartialEq + std::fmt::Debug,
{
    let whole = run::<H>(data, cap, || usize::MAX);
    assert_eq!(whole, run::<H>(data, cap, || 1));
    let mut k = seed as usize;
    let uneven = run::<H>(data, cap, || {
        k = (k * 31 + 7) % 97;
        k + 1
    });
    assert_eq!(whole, uneven);
    whole.0
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, data)) = data.split_first() else { return };
    for f in slicings::<V1>(data, seed, MAX_BODY_LEN) {
        if let Ok(m) = Message::parse(&f) {
            if let Ok(bytes) = m.to_bytes() {
                let (back, used) = Message::decode(&bytes).expect("re-encoded message parses").expect("whole frame");
                assert_eq!(used, bytes.len());
                assert_eq!(back, m);
            }
        }
    }
    for f in slicings::<V2>(data, seed, v2::MAX_PAYLOAD) {
        if let Ok(m) = v2::parse_message(&f) {
            let mut bytes = Vec::new();
            if v2::encode_message(&m, &mut bytes).is_ok() {
                let (used, back) = v2::FrameDecoder::new().decode(&bytes).expect("re-encoded frame decodes");
                assert_eq!(used, bytes.len());
                assert_eq!(v2::parse_message(&back.expect("whole frame")).expect("re-encoded message parses"), m);
            }
        }
    }
});
