//! The same request bytes through the proxy's fast path and through hyper's server: they agree on
//! where each request ends and on which requests there are.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| burrow::proxy::fuzz::fuzz_differential(data));
