//! burrow's integration tests, as one binary: every module tests the real program against real
//! peers (frps and frpc 0.65.0, upstream servers, relays, the provisioning API) that `util` starts
//! on loopback. One binary links once and shares the helpers; `cargo test --test integration NAME`
//! runs one module or test.

mod util;

mod access;
mod cli;
mod contract;
mod emulated;
mod fallback;
mod faults;
mod host;
mod hostile_server;
mod layout;
mod matrix;
mod native_client;
mod provisioning;
mod proxy;
mod reach;
mod security;
mod soak;
mod tls_verify;
mod verify;
mod windows;
mod wire;
