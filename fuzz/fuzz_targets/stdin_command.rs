//! The stdin command parser: any line is a command or an error that says what to send.
#![no_main]

use burrow::control::parse_command;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(line) = std::str::from_utf8(data) else { return };
    if let Err(e) = parse_command(line) {
        assert!(!e.is_empty());
    }
});
