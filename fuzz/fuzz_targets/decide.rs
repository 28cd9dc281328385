//! The one request pipeline on arbitrary tunnel requests: never a panic, never a pass without the
//! password (no share link exists to guess), never a hidden route under another spelling, and
//! burrow's credentials never left for the app.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow::proxy::fuzz::fuzz_decide(data));
