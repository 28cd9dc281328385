//! The snappy framing reader on arbitrary bytes (no panic, bounded buffering, same result for any
//! slicing) and on what the writer produces (the data comes back).
#![no_main]

use burrow_proto::snappy::{Compressor, Decompressor};
use libfuzzer_sys::fuzz_target;

fn feed(input: &[u8], step: usize) -> (Vec<u8>, bool) {
    let mut d = Decompressor::new();
    let mut out = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        if d.decompress(chunk, &mut out).is_err() {
            return (out, false);
        }
        // One chunk at most is held back: 4-byte header + 65,536 + 4-byte CRC, compressed or not.
        assert!(d.buffered() <= 4 + 65_536 + 4 + 65_536 / 6 + 32 + 4, "buffered {}", d.buffered());
    }
    (out, true)
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, data)) = data.split_first() else { return };
    let step = s as usize % 64 + 1;

    let whole = feed(data, data.len());
    let sliced = feed(data, step);
    // An error may come at a different chunk boundary, but the data before it must agree.
    if whole.1 && sliced.1 {
        assert_eq!(whole.0, sliced.0);
    }

    let mut c = Compressor::new();
    let mut wire = Vec::new();
    for part in data.chunks(step * 997) {
        c.compress(part, &mut wire);
    }
    let back = feed(&wire, step);
    assert!(back.1, "the reader refused the writer's own output");
    assert_eq!(back.0, data);
});
