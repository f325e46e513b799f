//! Config errors: each problem names the key it belongs to, and loading reports all of them at once so
//! an operator fixes a file in one pass instead of one error per restart.

use std::fmt;

/// One thing wrong with a config value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the offending key, e.g. `health_check.interval` or `backends[1]`.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.reason)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{origin}: cannot read the config file: {source}")]
    Read {
        origin: String,
        #[source]
        source: std::io::Error,
    },
    /// TOML syntax errors and unknown or mistyped keys, as located by the TOML parser.
    #[error("{origin}: {message}")]
    Syntax { origin: String, message: String },
    #[error("{origin}: {} problem(s):\n{}", problems.len(), list(origin, problems))]
    Invalid {
        origin: String,
        problems: Vec<Problem>,
    },
}

impl ConfigError {
    /// The individual problems, for callers that want to assert on or render them one by one.
    pub fn problems(&self) -> Vec<Problem> {
        match self {
            ConfigError::Invalid { problems, .. } => problems.clone(),
            ConfigError::Read { source, .. } => vec![Problem {
                key: "(file)".into(),
                reason: source.to_string(),
            }],
            ConfigError::Syntax { message, .. } => vec![Problem {
                key: "(syntax)".into(),
                reason: message.clone(),
            }],
        }
    }
}

fn list(origin: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| format!("  {origin}: {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}
