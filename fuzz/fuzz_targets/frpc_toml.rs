//! The frpc TOML reader on any text: a value or a `ConfigError`, never a panic, and a secret on a
//! bad line never printed.
#![no_main]

use std::path::Path;

use burrow::config::frpc_toml::{native_gap, FrpcFile};
use burrow::config::ServerConfig;
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "Zq8sekrit7Wx";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    check(text);
    // The same text with a token line: its value must never be in an error.
    let with_token = format!("auth.token = \"{SECRET}\"\n{text}");
    check(&with_token);
    let bare = format!("auth.token = {SECRET}\n{text}");
    check(&bare);
});

fn check(text: &str) {
    match FrpcFile::parse(Path::new("frpc.toml"), text) {
        Ok(f) => {
            let mut s = ServerConfig::new("", 7000, Default::default());
            let _ = f.apply_server(&mut s);
            if let Err(e) = f.tunnels() {
                assert!(!e.to_string().contains(SECRET), "{e}");
            }
        }
        Err(e) => assert!(!e.to_string().contains(SECRET), "secret in error: {e}"),
    }
    if let Ok(raw) = text.parse::<toml::Table>() {
        let _ = native_gap(&raw);
    }
}
