//! The proxy's request-framing guard on arbitrary request bytes: never panics, and reaches the
//! same verdict and state whatever the slicing of the stream.
#![no_main]

use std::sync::atomic::Ordering;

use burrow::proxy::framing::FramingGuard;
use libfuzzer_sys::fuzz_target;

fn run(data: &[u8], step: usize) -> (bool, (bool, bool)) {
    let (mut g, flag) = FramingGuard::new(());
    for piece in data.chunks(step.max(1)) {
        g.observe(piece);
    }
    (flag.load(Ordering::Relaxed), g.following())
}

fuzz_target!(|data: &[u8]| {
    let Some((&s, data)) = data.split_first() else { return };
    let whole = run(data, data.len());
    assert_eq!(run(data, 1), whole);
    assert_eq!(run(data, s as usize % 97 + 1), whole);
});
