//! The `login` method (`docs/rocketchat.md` §2.4): which credential to try in which order, the
//! exact parameter objects, and what a refusal means for the person running the bot.

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::frame::MethodError;
use super::{Credentials, Session};
use crate::ids::UserId;

/// One way of logging in.
pub(super) enum Attempt {
    /// The session token of the previous login on an earlier connection.
    Session,
    /// The personal access token from the configuration (a resume token that never expires).
    PersonalToken,
    Password,
}

impl Attempt {
    /// The attempts to make, in order, for these credentials. Resume logins come first: they
    /// are never challenged for a second factor and do not count towards brute-force blocking.
    pub(super) fn plan(credentials: &Credentials, session: Option<&Session>) -> Vec<Attempt> {
        let mut plan = Vec::with_capacity(3);
        if session.is_some() {
            plan.push(Attempt::Session);
        }
        if credentials.personal_token.is_some() {
            plan.push(Attempt::PersonalToken);
        }
        if credentials.password.is_some() {
            plan.push(Attempt::Password);
        }
        plan
    }

    /// The `params` of the `login` method call, or `None` when the credential is missing.
    pub(super) fn params(
        &self,
        credentials: &Credentials,
        session: Option<&Session>,
    ) -> Option<Vec<Value>> {
        let param = match self {
            Attempt::Session => json!({"resume": session?.token.expose_secret()}),
            Attempt::PersonalToken => {
                json!({"resume": credentials.personal_token.as_ref()?.expose_secret()})
            }
            Attempt::Password => json!({
                "user": {"username": credentials.username},
                "password": {
                    "digest": password_digest(credentials.password.as_ref()?),
                    "algorithm": "sha-256",
                },
            }),
        };
        Some(vec![param])
    }

    pub(super) fn label(&self) -> &'static str {
        match self {
            Attempt::Session => "session token",
            Attempt::PersonalToken => "personal access token",
            Attempt::Password => "password",
        }
    }
}

/// The lowercase hex SHA-256 of the UTF-8 password, which is what Meteor's accounts-password
/// expects; the plain password never leaves the process.
pub(super) fn password_digest(password: &SecretString) -> String {
    hex::encode(Sha256::digest(password.expose_secret().as_bytes()))
}

/// The session in a successful login result `{"id":…,"token":…,"tokenExpires":…}`.
pub(super) fn session_from_result(result: &Value) -> Option<Session> {
    let user_id = result.get("id")?.as_str()?;
    let token = result.get("token")?.as_str()?;
    Some(Session {
        user_id: UserId::new(user_id),
        token: SecretString::from(token.to_owned()),
    })
}

/// What to tell a person when every login attempt was refused, given the last refusal.
pub(super) fn advice(error: &MethodError, attempt: &Attempt, username: &str) -> String {
    let code = error.error.to_string();
    if error.is_totp_required() {
        return "the bot account has two-factor authentication; create a personal access token \
                for it and set auth_token and user_id in bot.toml"
            .to_owned();
    }
    if code.starts_with("error-login-blocked") {
        return format!(
            "rocket.chat temporarily blocks logins for {username} after failed attempts ({error}); \
             fix the password in bot.toml, then wait or unblock the user in rocket.chat"
        );
    }
    if code == "error-app-user-is-not-allowed-to-login" {
        return format!(
            "{username} is a rocket.chat app user, which may not log in; create a normal user \
             with the bot role and set it in bot.toml"
        );
    }
    match attempt {
        Attempt::Password => format!(
            "rocket.chat refused the password login for {username} ({error}); check username \
             and password in bot.toml"
        ),
        Attempt::PersonalToken | Attempt::Session => format!(
            "rocket.chat refused the personal access token ({error}); create a new token for \
             {username} and set auth_token and user_id in bot.toml"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rocketchat::ddp::frame::ErrorCode;

    fn credentials(password: Option<&str>, token: Option<&str>) -> Credentials {
        Credentials {
            username: "facebook.bot".into(),
            password: password.map(|p| SecretString::from(p.to_owned())),
            personal_token: token.map(|t| SecretString::from(t.to_owned())),
        }
    }

    #[test]
    fn digest_is_lowercase_sha256_hex() {
        let cases = [
            (
                "password",
                "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
            ),
            (
                "s3cret",
                "1ec1c26b50d5d3c58d9583181af8076655fe00756bf7285940ba3670f99fcba0",
            ),
            (
                "",
                "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            ),
        ];
        for (password, digest) in cases {
            assert_eq!(password_digest(&SecretString::from(password)), digest);
        }
    }

    #[test]
    fn plans_resume_before_password() {
        let session = Session {
            user_id: UserId::new("u1"),
            token: SecretString::from("sess"),
        };
        let labels = |c: &Credentials, s: Option<&Session>| -> Vec<&'static str> {
            Attempt::plan(c, s).iter().map(Attempt::label).collect()
        };
        let both = credentials(Some("pw"), Some("pat"));
        assert_eq!(
            labels(&both, Some(&session)),
            ["session token", "personal access token", "password"]
        );
        assert_eq!(labels(&both, None), ["personal access token", "password"]);
        assert_eq!(labels(&credentials(Some("pw"), None), None), ["password"]);
        assert!(labels(&credentials(None, None), None).is_empty());
    }

    #[test]
    fn builds_login_params() {
        let creds = credentials(Some("password"), Some("pat"));
        let session = Session {
            user_id: UserId::new("u1"),
            token: SecretString::from("sess"),
        };
        assert_eq!(
            Attempt::Password.params(&creds, None),
            Some(vec![json!({"user":{"username":"facebook.bot"},"password":{
                "digest":"5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8",
                "algorithm":"sha-256"}})])
        );
        assert_eq!(
            Attempt::PersonalToken.params(&creds, None),
            Some(vec![json!({"resume":"pat"})])
        );
        assert_eq!(
            Attempt::Session.params(&creds, Some(&session)),
            Some(vec![json!({"resume":"sess"})])
        );
        assert_eq!(Attempt::Session.params(&creds, None), None);
    }

    #[test]
    fn parses_login_results() {
        let ok =
            session_from_result(&json!({"id":"rbAX","token":"9Hq","tokenExpires":{"$date":1}}));
        assert_eq!(ok.map(|s| s.user_id), Some(UserId::new("rbAX")));
        for bad in [json!(null), json!({"id":"x"}), json!({"id":1,"token":"t"})] {
            assert!(session_from_result(&bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn advice_names_the_fix() {
        let error = |code: ErrorCode| MethodError {
            error: code,
            reason: None,
            details: None,
            message: None,
        };
        let cases = [
            (
                ErrorCode::Text("totp-required".into()),
                Attempt::Password,
                "personal access token",
            ),
            (
                ErrorCode::Number(403),
                Attempt::Password,
                "check username and password",
            ),
            (
                ErrorCode::Number(403),
                Attempt::PersonalToken,
                "create a new token",
            ),
            (
                ErrorCode::Text("error-login-blocked-for-ip".into()),
                Attempt::Password,
                "unblock",
            ),
            (
                ErrorCode::Text("error-app-user-is-not-allowed-to-login".into()),
                Attempt::Password,
                "app user",
            ),
        ];
        for (code, attempt, needle) in cases {
            let advice = advice(&error(code), &attempt, "facebook.bot");
            assert!(advice.contains(needle), "{advice}");
        }
    }
}
