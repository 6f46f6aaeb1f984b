//! Messenger webhook deliveries as Meta sends them: the JSON body and its `X-Hub-Signature-256`.
//! With a [`GraphSim`](omni_sim::graph::GraphSim) at hand, `sim.sign` / `sim.deliver_webhook` do
//! the same; these are for tests and benches that sign with a bare app secret.

use std::net::SocketAddr;

use omni_sim::graph::webhook_signature;
use serde_json::json;

/// `sha256=<hex HMAC-SHA256(app_secret, body)>`, the `X-Hub-Signature-256` header value.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    webhook_signature(app_secret, body)
}

/// A body with one customer text message (`sender` `psid`, message id `mid`) to `page`, with a
/// fixed timestamp so bodies are reproducible.
pub fn text_body(page: &str, psid: &str, mid: &str, text: &str) -> Vec<u8> {
    const AT_MS: u64 = 1_700_000_000_000;
    serde_json::to_vec(&json!({
        "object": "page",
        "entry": [{"id": page, "time": AT_MS, "messaging": [{
            "sender": {"id": psid},
            "recipient": {"id": page},
            "timestamp": AT_MS,
            "message": {"mid": mid, "text": text}
        }]}]
    }))
    .expect("json serializes")
}

/// POSTs `body` to the gateway's webhook at `addr` with `signature` (none: unsigned), as JSON;
/// the status code.
pub async fn post(
    http: &reqwest::Client,
    addr: SocketAddr,
    body: Vec<u8>,
    signature: Option<&str>,
) -> u16 {
    let mut request = http
        .post(format!("http://{addr}/webhooks/messenger"))
        .header("content-type", "application/json")
        .body(body);
    if let Some(signature) = signature {
        request = request.header("x-hub-signature-256", signature);
    }
    request
        .send()
        .await
        .expect("the gateway answers the webhook")
        .status()
        .as_u16()
}
