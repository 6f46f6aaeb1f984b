//! The one-line configuration error every problem becomes.

use std::fmt;
use std::path::{Path, PathBuf};

/// One configuration problem, displayed as one line:
/// `<file>: [section].key: what is wrong; what is expected`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    file: PathBuf,
    location: Option<String>,
    problem: String,
}

impl ConfigError {
    pub(super) fn new(file: &Path, location: Option<String>, problem: impl Into<String>) -> Self {
        // One line, always: systemd and `check` print it as is.
        let problem = problem.into().replace(['\n', '\r'], " ");
        Self {
            file: file.to_path_buf(),
            location,
            problem,
        }
    }

    /// The config file the problem is in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// Where in the file: `[section].key`, `[section]` or `line L, column C`.
    pub fn location(&self) -> Option<&str> {
        self.location.as_deref()
    }

    /// What is wrong and what is expected.
    pub fn problem(&self) -> &str {
        &self.problem
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.file.display())?;
        if let Some(location) = &self.location {
            write!(f, "{location}: ")?;
        }
        f.write_str(&self.problem)
    }
}
