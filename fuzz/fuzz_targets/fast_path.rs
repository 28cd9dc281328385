//! The proxy fast path's request and response head parsers on arbitrary bytes: never panic, and
//! what they forward is one well-formed head without hop-by-hop headers.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow::proxy::fuzz::fuzz_heads(data));
