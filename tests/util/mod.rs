//! Real peers for the integration tests, one module per peer: frps (and frpc) 0.65.0 fetched by
//! resources/fetch-frp.sh, local HTTP/TCP services on loopback, the burrow binary itself with its
//! JSON event stream, TCP relays that count or inject faults, and the provisioning API.
#![allow(dead_code, clippy::type_complexity)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

mod api;
mod burrow;
mod frps;
mod pki;
mod proxies;
mod relay;
mod upstream;

pub use api::*;
pub use burrow::*;
pub use frps::*;
pub use pki::*;
pub use proxies::*;
pub use relay::*;
pub use upstream::*;
