//! The configuration's error, and the secret values it never prints.

use std::fmt;

/// A secret string: never printed by `Debug` or `Display`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself, for the wire only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_empty() { "\"\"" } else { "\"***\"" })
    }
}

/// A value that cannot be used, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}={value} is invalid: {problem}. Example: {example}")]
pub struct ConfigError {
    /// The variable, flag or `file:key` that holds the value.
    pub source_name: String,
    /// The value as given (masked for secrets).
    pub value: String,
    /// What is wrong with it.
    pub problem: String,
    /// An accepted setting.
    pub example: String,
}

impl ConfigError {
    pub(super) fn new(
        source_name: impl Into<String>,
        value: impl Into<String>,
        problem: impl Into<String>,
        example: impl Into<String>,
    ) -> Self {
        Self { source_name: source_name.into(), value: value.into(), problem: problem.into(), example: example.into() }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> String {
        format!("fix {} and start again", self.source_name)
    }
}
