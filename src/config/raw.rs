//! The config file exactly as written: serde structs that reject unknown keys and keep every value
//! loosely typed (strings for durations, signed integers for counts) so that validation, not serde,
//! reports a bad value together with the key it belongs to.

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    pub listen: Option<String>,
    pub algorithm: Option<String>,
    pub backends: Option<Vec<String>>,
    pub backend: Option<Vec<RawBackend>>,
    pub health_check: Option<RawHealthCheck>,
    pub timeouts: Option<RawTimeouts>,
    pub retry: Option<RawRetry>,
    pub access_log: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBackend {
    pub url: String,
    pub weight: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealthCheck {
    pub path: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTimeouts {
    pub connect: Option<String>,
    pub response: Option<String>,
    pub drain: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub attempts: Option<i64>,
}
