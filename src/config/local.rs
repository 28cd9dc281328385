//! The local section: the reverse proxy's address and route table, and how long upstreams and
//! tunnel streams may take.

use std::net::SocketAddr;
use std::time::Duration;

use super::{get, parse_socket_addr, ConfigError, Env, DEFAULT_MAX_STREAMS, DEFAULT_PROXY_ADDR, MAX_STREAMS_LIMIT};

/// What the local section sets.
pub(super) struct Local {
    pub proxy_addr: Option<SocketAddr>,
    pub routes: crate::proxy::Routes,
    pub upstream_timeout: Duration,
    pub max_streams: usize,
}

/// `BURROW_PROXY_ADDR`, `BURROW_ROUTES`, `BURROW_UPSTREAM_TIMEOUT`, `BURROW_MAX_STREAMS`.
pub(super) fn read(env: &Env) -> Result<Local, ConfigError> {
    let proxy_addr = match get(env, "BURROW_PROXY_ADDR") {
        Some(v) if v.trim().eq_ignore_ascii_case("off") => None,
        Some(v) => Some(parse_socket_addr("BURROW_PROXY_ADDR", v)?),
        None => Some(DEFAULT_PROXY_ADDR.parse().expect("valid default")),
    };

    let routes_spec = get(env, "BURROW_ROUTES").unwrap_or(crate::proxy::routes::DEFAULT_ROUTES);
    let routes = crate::proxy::Routes::parse(routes_spec).map_err(|e| {
        ConfigError::new(
            "BURROW_ROUTES",
            routes_spec,
            format!("{e}; routes are prefix=http://host:port, comma-separated"),
            format!("BURROW_ROUTES={}", crate::proxy::routes::DEFAULT_ROUTES),
        )
    })?;

    let upstream_timeout = match get(env, "BURROW_UPSTREAM_TIMEOUT") {
        None => crate::proxy::RESPONSE_TIMEOUT,
        Some(v) => match v.trim().parse::<f64>() {
            Ok(secs) if secs > 0.0 && secs <= 86_400.0 => std::time::Duration::from_secs_f64(secs),
            _ => {
                return Err(ConfigError::new(
                    "BURROW_UPSTREAM_TIMEOUT",
                    v,
                    "expected seconds, more than 0 and at most 86400",
                    "BURROW_UPSTREAM_TIMEOUT=60",
                ))
            }
        },
    };

    let max_streams = match get(env, "BURROW_MAX_STREAMS") {
        None => DEFAULT_MAX_STREAMS,
        Some(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_STREAMS_LIMIT).contains(&n) => n,
            _ => {
                return Err(ConfigError::new(
                    "BURROW_MAX_STREAMS",
                    v,
                    format!("expected a number of work streams from 1 to {MAX_STREAMS_LIMIT}"),
                    format!("BURROW_MAX_STREAMS={DEFAULT_MAX_STREAMS}"),
                ))
            }
        },
    };
    Ok(Local { proxy_addr, routes, upstream_timeout, max_streams })
}
