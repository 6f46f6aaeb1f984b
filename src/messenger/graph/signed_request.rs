//! Meta's `signed_request`, which the Deauthorize and Data Deletion Request callbacks post:
//! `base64url(signature) "." base64url(payload)`, the signature an HMAC-SHA256 of the encoded
//! payload keyed with the app secret, the payload JSON with `algorithm` `HMAC-SHA256` and the
//! app-scoped `user_id`
//! (https://developers.facebook.com/docs/development/create-an-app/app-dashboard/data-deletion-callback ,
//! https://developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow#deauth-callback).

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use sha2::Sha256;

/// Why a `signed_request` was refused.
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum SignedRequestError {
    #[error("signed_request is not two base64url parts joined by a dot")]
    Malformed,
    #[error("signed_request's signature does not match: it was not signed with this app's secret")]
    BadSignature,
    #[error("signed_request's payload is not the JSON Meta sends: {0}")]
    Payload(String),
    #[error("signed_request uses algorithm {0}; only HMAC-SHA256 is accepted")]
    Algorithm(String),
}

/// The verified payload.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct SignedRequest {
    pub algorithm: String,
    /// The app-scoped id of the person.
    #[serde(deserialize_with = "string_or_number")]
    pub user_id: String,
    #[serde(default)]
    pub issued_at: Option<u64>,
}

/// Checks the signature in constant time, then decodes the payload.
pub fn verify(app_secret: &str, raw: &str) -> Result<SignedRequest, SignedRequestError> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (signature, payload) = raw
        .trim()
        .split_once('.')
        .ok_or(SignedRequestError::Malformed)?;
    // Meta pads neither part, but a padded copy is the same value.
    let signature = b64
        .decode(signature.trim_end_matches('='))
        .map_err(|_| SignedRequestError::Malformed)?;
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(app_secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts any key length"));
    mac.update(payload.as_bytes());
    mac.verify_slice(&signature)
        .map_err(|_| SignedRequestError::BadSignature)?;
    let json = b64
        .decode(payload.trim_end_matches('='))
        .map_err(|_| SignedRequestError::Malformed)?;
    let request: SignedRequest =
        serde_json::from_slice(&json).map_err(|e| SignedRequestError::Payload(e.to_string()))?;
    if !request.algorithm.eq_ignore_ascii_case("HMAC-SHA256") {
        return Err(SignedRequestError::Algorithm(request.algorithm));
    }
    Ok(request)
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        _ => Err(serde::de::Error::custom(
            "user_id must be a string or a number",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sign(secret: &str, payload: &str) -> String {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let encoded = b64.encode(payload);
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(encoded.as_bytes());
        format!("{}.{encoded}", b64.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn verifies_meta_signed_requests_and_refuses_the_rest() {
        let good = sign(
            "s",
            r#"{"algorithm":"HMAC-SHA256","issued_at":1,"user_id":"42"}"#,
        );
        assert_eq!(verify("s", &good).unwrap().user_id, "42");
        let numeric = sign("s", r#"{"algorithm":"HMAC-SHA256","user_id":42}"#);
        assert_eq!(verify("s", &numeric).unwrap().user_id, "42");
        let cases = [
            (good.clone(), "other", SignedRequestError::BadSignature),
            ("nodot".to_owned(), "s", SignedRequestError::Malformed),
            ("!!.!!".to_owned(), "s", SignedRequestError::Malformed),
            (
                sign("s", r#"{"algorithm":"HMAC-SHA1","user_id":"42"}"#),
                "s",
                SignedRequestError::Algorithm("HMAC-SHA1".into()),
            ),
        ];
        for (raw, secret, want) in cases {
            assert_eq!(verify(secret, &raw), Err(want), "{raw}");
        }
        // The payload of a valid signature swapped for another person's.
        let (sig, _) = good.split_once('.').unwrap();
        let (_, other) = sign("s", r#"{"algorithm":"HMAC-SHA256","user_id":"43"}"#)
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert_eq!(
            verify("s", &format!("{sig}.{other}")),
            Err(SignedRequestError::BadSignature)
        );
    }
}
