//! Secrets in priority order: the environment, a `*_file` (from systemd's credentials directory
//! first), the key itself.

use std::path::{Path, PathBuf};

use secrecy::{ExposeSecret, SecretString};

use super::validate::Context;
use super::*;

/// A secret as the file gives it: inline, as a `*_file` path, or not at all.
pub(super) struct RawSecret {
    pub(super) section: &'static str,
    pub(super) key: &'static str,
    pub(super) inline: Option<SecretString>,
    pub(super) file: Option<PathBuf>,
}

impl Context<'_> {
    pub(super) fn required_secret(
        &self,
        raw: RawSecret,
        expected: &str,
    ) -> Result<SecretString, ConfigError> {
        let (section, key) = (raw.section, raw.key);
        self.secret(raw)?.ok_or_else(|| {
            self.err(
                section,
                key,
                format!(
                    "missing; expected {expected}, set as {key}, {key}_file or {}",
                    env_name(section, key)
                ),
            )
        })
    }

    /// Resolves a secret in priority order: environment variable, `*_file`, the key itself.
    pub(super) fn secret(&self, raw: RawSecret) -> Result<Option<SecretString>, ConfigError> {
        let RawSecret {
            section,
            key,
            inline,
            file,
        } = raw;
        let file_key = format!("{key}_file");
        if inline.is_some() && file.is_some() {
            return Err(self.err(
                section,
                key,
                format!("both {key} and {file_key} are set; keep only one"),
            ));
        }
        let env_var = env_name(section, key);
        if let Some(value) = (self.env)(&env_var) {
            if value.is_empty() {
                return Err(self.err(
                    section,
                    key,
                    format!("environment variable {env_var} is set but empty; set it to the value or unset it"),
                ));
            }
            return Ok(Some(SecretString::from(value)));
        }
        if let Some(file) = file {
            return self.secret_file(section, &file_key, &file).map(Some);
        }
        match inline {
            Some(value) if value.expose_secret().is_empty() => Err(self.err(
                section,
                key,
                format!("is empty; set it, or use {file_key} or {env_var}"),
            )),
            other => Ok(other),
        }
    }

    /// Reads a secret file. A relative path found in systemd's `CREDENTIALS_DIRECTORY`
    /// (`LoadCredential=`) wins over one beside the config file.
    fn secret_file(
        &self,
        section: &str,
        file_key: &str,
        file: &Path,
    ) -> Result<SecretString, ConfigError> {
        if file.as_os_str().is_empty() {
            return Err(self.err(
                section,
                file_key,
                "is empty; expected the path of a file holding the secret",
            ));
        }
        let credential = (self.env)(CREDENTIALS_DIRECTORY)
            .filter(|_| file.is_relative())
            .map(|dir| Path::new(&dir).join(file))
            .filter(|candidate| candidate.is_file());
        let path = credential.unwrap_or_else(|| self.dir.join(file));
        let contents = std::fs::read_to_string(&path).map_err(|err| {
            self.err(
                section,
                file_key,
                format!(
                    "cannot read '{}' ({err}); expected a readable file holding the secret",
                    path.display()
                ),
            )
        })?;
        let value = contents.trim_end_matches(['\n', '\r']);
        if value.is_empty() {
            return Err(self.err(
                section,
                file_key,
                format!("'{}' is empty; expected the secret in it", path.display()),
            ));
        }
        Ok(SecretString::from(value.to_owned()))
    }
}
