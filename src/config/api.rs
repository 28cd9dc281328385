//! The provisioning API section (`BURROW_API_*`).

use super::{ConfigError, Secret};

/// The provisioning API (contract §5).
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Base URL without a trailing slash; endpoints are appended.
    pub url: String,
    /// Bearer token.
    pub token: Secret,
    /// `userId` of the reservation.
    pub user_id: String,
    /// `projectId` of the reservation.
    pub project_id: String,
}

pub(super) fn parse_api_url(v: &str) -> Result<String, ConfigError> {
    let bad = |p: &str| ConfigError::new("BURROW_API_URL", v, p, "BURROW_API_URL=https://api.example.com/tunnels");
    let u = reqwest::Url::parse(v.trim()).map_err(|e| bad(&format!("not a URL ({e})")))?;
    if u.scheme() != "http" && u.scheme() != "https" {
        return Err(bad("expected an http:// or https:// URL"));
    }
    if u.host_str().is_none_or(str::is_empty)
        || u.query().is_some()
        || u.fragment().is_some()
        || !u.username().is_empty()
    {
        return Err(bad("expected scheme://host[:port][/path], without credentials, query or fragment"));
    }
    Ok(u.as_str().trim_end_matches('/').to_string())
}
