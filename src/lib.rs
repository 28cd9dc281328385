//! burrow: puts a desktop app's local web stack on a public URL through frps.
//!
//! The library holds everything; `src/main.rs` only wires the command line to [`app`] (the
//! tunnel), [`check`] and [`demo`]. It is a library so that the fuzz targets in `fuzz/` reach the
//! same parsers the program runs (configuration, routes, stdin commands, provisioning answers).
//! Its API is not stable and not meant for other crates.

// The exceptions are in `frpc`: the Linux pre-exec hook and the Windows job object (`frpc::job`),
// which tie frpc's life to burrow's.
#![deny(unsafe_code)]

pub mod admin;
pub mod app;
pub mod check;
pub mod client;
pub mod config;
pub mod control;
pub mod demo;
pub mod events;
pub mod frpc;
pub mod layers;
pub mod lines;
pub mod platform;
pub mod provision;
pub mod proxy;
pub mod status;
pub mod supervise;
pub mod transport;
pub mod verify;
