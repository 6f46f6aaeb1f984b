//! Wire helpers shared by the DDP and REST halves of the simulator: Meteor-style ids, EJSON and
//! ISO dates, the `Meteor.Error` JSON shape, and the REST reply envelopes of `ApiClass.ts`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde_json::{Value, json};

/// Meteor's `Random.id()` alphabet ("unmistakable characters"); ids are 17 characters long.
const UNMISTAKABLE: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTWXYZabcdefghijkmnopqrstuvwxyz";
/// Meteor's `Random.secret()` alphabet (base64url); login tokens are 43 characters long.
const SECRET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_from(alphabet: &[u8], len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(alphabet[rng.random_range(0..alphabet.len())]))
        .collect()
}

/// A new document id, shaped like Meteor's `Random.id()`.
pub(super) fn random_id() -> String {
    random_from(UNMISTAKABLE, 17)
}

/// A new login token, shaped like Meteor's `Random.secret()`.
pub(super) fn random_secret() -> String {
    random_from(SECRET, 43)
}

/// Wall-clock milliseconds since the epoch, the unit of every Rocket.Chat date.
pub(super) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How a date is written: EJSON `{"$date":ms}` on DDP, an ISO-8601 string in REST bodies.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum DateForm {
    Ejson,
    Iso,
}

pub(super) fn date(ms: i64, form: DateForm) -> Value {
    match form {
        DateForm::Ejson => json!({ "$date": ms }),
        DateForm::Iso => Value::String(iso(ms)),
    }
}

/// `Date.prototype.toISOString()` for a millisecond timestamp (UTC, millisecond precision).
pub(super) fn iso(ms: i64) -> String {
    crate::dates::iso(u64::try_from(ms).unwrap_or(0))
}

/// A `Meteor.Error` as DDP serialises it: `message` is `"reason [error]"`, or `"[error]"` when
/// there is no reason (`METEOR:packages/meteor/errors.js`).
pub(super) fn meteor_error(error: Value, reason: Option<&str>, details: Option<Value>) -> Value {
    let code = match &error {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let message = match reason {
        Some(r) => format!("{r} [{code}]"),
        None => format!("[{code}]"),
    };
    let mut e = json!({ "isClientSafe": true, "error": error, "message": message, "errorType": "Meteor.Error" });
    if let Some(r) = reason {
        e["reason"] = json!(r);
    }
    if let Some(d) = details {
        e["details"] = d;
    }
    e
}

/// One REST answer: a status and a JSON body.
#[derive(Debug)]
pub(super) struct Reply {
    pub status: StatusCode,
    pub body: Value,
}

impl IntoResponse for Reply {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

/// `API.v1.success(result)`: the result object with `success: true` added.
pub(super) fn success(mut body: Value) -> Reply {
    if let Value::Object(map) = &mut body {
        map.insert("success".into(), Value::Bool(true));
    }
    Reply {
        status: StatusCode::OK,
        body,
    }
}

/// A thrown `Meteor.Error(code, reason, details)` caught by the route wrapper: HTTP 400
/// `{"success":false,"error":"reason [code]","errorType":code,"details"?}`.
pub(super) fn meteor_failure(code: &str, reason: Option<&str>, details: Option<Value>) -> Reply {
    let error = match reason {
        Some(r) => format!("{r} [{code}]"),
        None => format!("[{code}]"),
    };
    let mut body = json!({ "success": false, "error": error, "errorType": code });
    if let Some(d) = details {
        body["details"] = d;
    }
    Reply {
        status: StatusCode::BAD_REQUEST,
        body,
    }
}

/// A thrown plain `Error(message)`: HTTP 400 `{"success":false,"error":message}` (no errorType).
pub(super) fn plain_failure(message: &str) -> Reply {
    Reply {
        status: StatusCode::BAD_REQUEST,
        body: json!({ "success": false, "error": message }),
    }
}

/// `API.v1.failure(object)`: the object itself with `success: false`, HTTP 400.
pub(super) fn object_failure(mut body: Value) -> Reply {
    if let Value::Object(map) = &mut body {
        map.insert("success".into(), Value::Bool(false));
    }
    Reply {
        status: StatusCode::BAD_REQUEST,
        body,
    }
}

/// The answer of an `authRequired` route without valid `X-User-Id`/`X-Auth-Token` (ApiClass.ts,
/// 6.x/7.x compatibility form).
pub(super) fn unauthorized() -> Reply {
    Reply {
        status: StatusCode::UNAUTHORIZED,
        body: json!({
            "success": false,
            "error": "You must be logged in to do this.",
            "status": "error",
            "message": "You must be logged in to do this."
        }),
    }
}

/// A `permissionsRequired` check that failed: `error-unauthorized` mapped to `API.v1.forbidden`.
pub(super) fn forbidden_permissions() -> Reply {
    Reply {
        status: StatusCode::FORBIDDEN,
        body: json!({
            "success": false,
            "error": "User does not have the permissions required for this action [error-unauthorized]"
        }),
    }
}

/// `API.v1.forbidden()` without a message (7.x livechat upload for a bad visitor token).
pub(super) fn forbidden() -> Reply {
    Reply {
        status: StatusCode::FORBIDDEN,
        body: json!({ "success": false, "error": "unauthorized" }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_dates_match_javascript() {
        let cases = [
            (0, "1970-01-01T00:00:00.000Z"),
            (1_718_000_000_123, "2024-06-10T06:13:20.123Z"),
            (951_782_400_000, "2000-02-29T00:00:00.000Z"),
        ];
        for (ms, want) in cases {
            assert_eq!(iso(ms), want, "{ms}");
        }
    }

    #[test]
    fn meteor_errors_carry_reason_in_message() {
        let e = meteor_error(json!(404), Some("Method 'x' not found"), None);
        assert_eq!(e["message"], "Method 'x' not found [404]");
        let e = meteor_error(json!("not-allowed"), None, None);
        assert_eq!(e["message"], "[not-allowed]");
        assert!(e.get("reason").is_none());
    }

    #[test]
    fn ids_have_meteor_shapes() {
        assert_eq!(random_id().len(), 17);
        assert_eq!(random_secret().len(), 43);
    }
}
