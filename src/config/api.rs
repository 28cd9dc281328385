//! The provisioning API section (`BURROW_API_*`).

use std::path::PathBuf;

use super::{get, ConfigError, Env, Secret};

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

fn parse_api_url(v: &str) -> Result<String, ConfigError> {
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

/// `BURROW_API_*`: the provisioning API, when tunnels come from a reservation. One source of
/// tunnels at a time: `have_server` says a server is configured otherwise, `file` is a config file
/// that lists tunnels.
pub(super) fn read(env: &Env, have_server: bool, file: Option<&PathBuf>) -> Result<Option<ApiConfig>, ConfigError> {
    Ok(match get(env, "BURROW_API_URL") {
        None => None,
        Some(url) => {
            let url = parse_api_url(url)?;
            if get(env, "BURROW_SERVER_ADDR").is_some() || have_server {
                let (var, value) = if get(env, "BURROW_SERVER_ADDR").is_some() {
                    ("BURROW_SERVER_ADDR", get(env, "BURROW_SERVER_ADDR").unwrap_or_default().to_string())
                } else {
                    ("BURROW_CONFIG", "(serverAddr in the file)".to_string())
                };
                return Err(ConfigError::new(var, value, "BURROW_API_URL is set: tunnels and their server come from the provisioning API, one source at a time", "unset BURROW_SERVER_ADDR (and serverAddr), or unset BURROW_API_URL"));
            }
            if let Some(path) = file {
                return Err(ConfigError::new(
                    "BURROW_CONFIG",
                    path.display().to_string(),
                    "BURROW_API_URL is set: tunnels come from the provisioning API, not [[proxies]]",
                    "unset BURROW_CONFIG, or unset BURROW_API_URL",
                ));
            }
            let need = |k: &str, ex: &str| {
                get(env, k).map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).ok_or_else(|| {
                    ConfigError::new(
                        k,
                        "(unset)",
                        "required with BURROW_API_URL: the reservation is made for a user and a project",
                        format!("{k}={ex}"),
                    )
                })
            };
            Some(ApiConfig {
                url,
                token: Secret::new(env.get("BURROW_API_TOKEN").cloned().unwrap_or_default()),
                user_id: need("BURROW_USER_ID", "user-123")?,
                project_id: need("BURROW_PROJECT_ID", "project-456")?,
            })
        }
    })
}
