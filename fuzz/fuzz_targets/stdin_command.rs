//! stdin commands: any bytes, split into lines as burrow reads them, give a command, nothing (a
//! blank line) or an error that says what to send; never a panic.
#![no_main]

use burrow::control::command_of;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for line in data.split(|&b| b == b'\n') {
        if let Err(e) = command_of(line) {
            assert!(!e.is_empty());
        }
    }
});
