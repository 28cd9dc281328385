//! The environment configuration: any `BURROW_*` values give a `Config` or a `ConfigError` naming
//! a variable, never a panic, and never print a token.
#![no_main]

use burrow::config::{load, Env, Overrides};
use libfuzzer_sys::fuzz_target;

// BURROW_CONFIG and BURROW_TLS_CA name files; the file readers have their own target.
const KEYS: &[&str] = &[
    "BURROW_SERVER_ADDR",
    "BURROW_SERVER_TOKEN",
    "BURROW_SUBDOMAIN",
    "BURROW_TLS",
    "BURROW_TLS_PIN",
    "BURROW_TLS_SERVER_NAME",
    "BURROW_TCP_MUX",
    "BURROW_MODE",
    "BURROW_PROXY_ADDR",
    "BURROW_ROUTES",
    "BURROW_ADMIN_ADDR",
    "BURROW_ADMIN_TOKEN",
    "BURROW_API_URL",
    "BURROW_API_TOKEN",
    "BURROW_USER_ID",
    "BURROW_PROJECT_ID",
    "BURROW_UPSTREAM_TIMEOUT",
    "BURROW_LOG",
    "BURROW_FRPC_PATH",
];
const MARKER: &str = "Zq8sekrit7Wx";
const SECRETS: &[&str] = &["BURROW_SERVER_TOKEN", "BURROW_API_TOKEN", "BURROW_ADMIN_TOKEN"];

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut env = Env::new();
    for line in text.split('\n') {
        let Some((k, v)) = line.split_once('=') else { continue };
        let key: &str = match KEYS.iter().find(|key| key.ends_with(k) && !k.is_empty()) {
            Some(key) => key,
            None => KEYS[k.len() % KEYS.len()],
        };
        // A secret keeps whatever the fuzzer chose (bad characters included) plus a marker that
        // no message could contain for any other reason.
        let v = if SECRETS.contains(&key) { format!("{v}{MARKER}") } else { v.to_string() };
        env.insert(key.to_string(), v);
    }
    if let Err(e) = load(&env, &Overrides::default()) {
        assert!(e.source_name.starts_with("BURROW_") || e.source_name.starts_with("--"), "{e:?}");
        let shown = format!("{e} {e:?}");
        assert!(!shown.contains(MARKER), "a token in the error: {shown}");
    }
});
