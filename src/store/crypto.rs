//! The key that seals access tokens at rest, and the sealing itself.
//!
//! Tokens are sealed with ChaCha20-Poly1305 under a 32-byte key that lives in its own file,
//! outside the sled directory, so a copy of the store alone (a backup, a bug report) reveals no
//! token. Every seal draws a fresh random 96-bit nonce; the record's identity (for instance
//! `page:<id>`) is the associated data, so a sealed token copied onto another record fails to
//! open instead of silently authenticating as the wrong page.

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use rand::RngCore;
use rand::TryRngCore;
use rand::rngs::OsRng;
use secrecy::{ExposeSecret, ExposeSecretMut, SecretBox, SecretString};

use super::{Error, Result};

const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 12;

/// The token-sealing key. It is zeroized when dropped and never printed: its `Debug` form is
/// `TokenKey(…)`.
pub struct TokenKey(SecretBox<[u8; KEY_LEN]>);

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(…)")
    }
}

impl TokenKey {
    /// Wraps raw key bytes (tests, or a key obtained some other way).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> TokenKey {
        TokenKey(SecretBox::new(Box::new(bytes)))
    }

    /// Reads the key file at `path`, or creates it with 32 random bytes and mode 0600 when it
    /// does not exist yet. An existing file that group or others can access, or that does not
    /// hold exactly 32 bytes, is refused rather than used: a readable key defeats the sealing,
    /// and a truncated one would make every stored token unreadable.
    pub fn load_or_create(path: &Path) -> Result<TokenKey> {
        // Two attempts: if another process creates the file between our read and our
        // `create_new`, the second round reads what it wrote.
        for _ in 0..2 {
            match Self::load(path) {
                Err(Error::TokenKeyIo { source, .. })
                    if source.kind() == io::ErrorKind::NotFound => {}
                other => return other,
            }
            match Self::create(path) {
                Err(Error::TokenKeyIo { source, .. })
                    if source.kind() == io::ErrorKind::AlreadyExists => {}
                other => return other,
            }
        }
        Self::load(path)
    }

    fn load(path: &Path) -> Result<TokenKey> {
        let io_err = |source| Error::TokenKeyIo {
            path: path.to_owned(),
            source,
        };
        let mut file = fs::File::open(path).map_err(io_err)?;
        let mode = file.metadata().map_err(io_err)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(Error::TokenKey {
                path: path.to_owned(),
                reason: format!(
                    "group or others may access it (mode {:o}); run `chmod 600 {}`",
                    mode & 0o777,
                    path.display()
                ),
            });
        }
        // Read one byte more than a key so a longer file is detected without reading it all.
        let mut bytes = SecretBox::new(Box::new([0u8; KEY_LEN + 1]));
        let mut len = 0;
        loop {
            let buf = &mut bytes.expose_secret_mut()[len..];
            if buf.is_empty() {
                break;
            }
            match file.read(buf) {
                Ok(0) => break,
                Ok(n) => len += n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
                Err(err) => return Err(io_err(err)),
            }
        }
        if len != KEY_LEN {
            return Err(Error::TokenKey {
                path: path.to_owned(),
                reason: format!(
                    "it holds {} bytes, a key is exactly {KEY_LEN}; restore the original file \
                     (the stored tokens cannot be read without it)",
                    if len > KEY_LEN {
                        "more than 32".to_owned()
                    } else {
                        len.to_string()
                    }
                ),
            });
        }
        let key = SecretBox::init_with_mut(|key: &mut [u8; KEY_LEN]| {
            key.copy_from_slice(&bytes.expose_secret()[..KEY_LEN]);
        });
        Ok(TokenKey(key))
    }

    fn create(path: &Path) -> Result<TokenKey> {
        let io_err = |source| Error::TokenKeyIo {
            path: path.to_owned(),
            source,
        };
        let mut key = SecretBox::new(Box::new([0u8; KEY_LEN]));
        OsRng
            .try_fill_bytes(key.expose_secret_mut())
            .map_err(|err| Error::TokenKey {
                path: path.to_owned(),
                reason: format!("the operating system's random source failed: {err}"),
            })?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::create_dir_all(dir).map_err(io_err)?;
        }
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io_err)?;
        let written = file
            .write_all(key.expose_secret())
            .and_then(|()| file.sync_all());
        if let Err(err) = written {
            // A partial key file would be refused on the next start; remove it so the next
            // attempt starts clean. Nothing was sealed with this key yet.
            let _ = fs::remove_file(path);
            return Err(io_err(err));
        }
        // Make the new directory entry itself durable, or a crash could lose the key file
        // after tokens sealed with it reached the store.
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            fs::File::open(dir)
                .and_then(|dir| dir.sync_all())
                .map_err(io_err)?;
        }
        tracing::info!(path = %path.display(), "created a new token key");
        Ok(TokenKey(key))
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(Key::from_slice(self.0.expose_secret()))
    }

    /// Seals `secret` bound to `context`; the result is base64 of `nonce || ciphertext || tag`.
    pub(super) fn seal(&self, context: &str, secret: &SecretString) -> String {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        self.seal_with_nonce(context, secret, nonce)
    }

    pub(super) fn seal_with_nonce(
        &self,
        context: &str,
        secret: &SecretString,
        nonce: [u8; NONCE_LEN],
    ) -> String {
        let payload = Payload {
            msg: secret.expose_secret().as_bytes(),
            aad: context.as_bytes(),
        };
        // ChaCha20-Poly1305 encryption fails only for messages over 256 GiB; a token is a few
        // hundred bytes, so the error arm cannot be reached. It still yields no clear text.
        let sealed = self
            .cipher()
            .encrypt(Nonce::from_slice(&nonce), payload)
            .unwrap_or_default();
        let mut out = Vec::with_capacity(NONCE_LEN + sealed.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        BASE64.encode(out)
    }

    /// Opens what [`seal`](Self::seal) produced for the same `context`. `None` means the value is
    /// malformed, was sealed under another key, or belongs to another record.
    pub(super) fn open(&self, context: &str, sealed: &str) -> Option<SecretString> {
        let bytes = BASE64.decode(sealed).ok()?;
        if bytes.len() < NONCE_LEN {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let clear = self
            .cipher()
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .ok()?;
        String::from_utf8(clear).ok().map(SecretString::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> SecretString {
        SecretString::from(s.to_owned())
    }

    #[test]
    fn sealing_round_trips_and_is_bound_to_its_context_and_key() {
        let key = TokenKey::from_bytes([7; 32]);
        let other_key = TokenKey::from_bytes([8; 32]);
        let sealed = key.seal("page:1", &secret("EAAB-token"));
        assert!(!sealed.contains("EAAB"));
        assert_eq!(
            key.open("page:1", &sealed)
                .map(|s| s.expose_secret().to_owned()),
            Some("EAAB-token".into())
        );
        assert!(
            key.open("page:2", &sealed).is_none(),
            "another record's context must not open it"
        );
        assert!(
            other_key.open("page:1", &sealed).is_none(),
            "another key must not open it"
        );
        assert!(key.open("page:1", "not base64!").is_none());
        assert!(key.open("page:1", "AAAA").is_none());
        assert_ne!(
            key.seal("page:1", &secret("x")),
            key.seal("page:1", &secret("x")),
            "nonces must differ"
        );
    }

    #[test]
    fn debug_never_shows_the_key() {
        assert_eq!(
            format!("{:?}", TokenKey::from_bytes([0x41; 32])),
            "TokenKey(…)"
        );
    }

    #[test]
    fn key_file_is_created_0600_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("token.key");
        let created = TokenKey::load_or_create(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(fs::read(&path).unwrap().len(), 32);
        let loaded = TokenKey::load_or_create(&path).unwrap();
        assert_eq!(created.0.expose_secret(), loaded.0.expose_secret());
    }

    #[test]
    fn bad_key_files_are_refused_with_the_reason() {
        // (contents, mode, expected fragment of the message)
        let cases: &[(&[u8], u32, &str)] = &[
            (&[1; 32], 0o644, "mode 644"),
            (&[1; 32], 0o640, "mode 640"),
            (&[1; 32], 0o604, "mode 604"),
            (&[1; 31], 0o600, "holds 31 bytes"),
            (&[1; 33], 0o600, "holds more than 32 bytes"),
            (&[], 0o600, "holds 0 bytes"),
        ];
        for (contents, mode, expected) in cases {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("token.key");
            fs::write(&path, contents).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
            let err = TokenKey::load_or_create(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{mode:o}: {err}");
            assert!(
                err.contains("token.key"),
                "the message names the file: {err}"
            );
            assert_eq!(
                fs::read(&path).unwrap(),
                *contents,
                "a refused file is left alone"
            );
        }
    }
}
