//! Metrics, kept next to the events they count so logs and metrics never disagree. Rendered as
//! Prometheus text at `/metrics`.

use std::sync::Arc;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

struct Metrics {
    registry: Registry,
    webhook_events: Family<Labels, Counter>,
    webhook_seconds: Histogram,
    inbound_delivered: Counter,
    inbound_held: Counter,
    inbound_latency_seconds: Histogram,
    rocketchat_errors: Family<Labels, Counter>,
    replies: Family<Labels, Counter>,
    send_seconds: Histogram,
    inbox_depth: Gauge,
    outbox_depth: Gauge,
    held_conversations: Gauge,
    rocketchat_up: Gauge,
    pages: Family<Labels, Gauge>,
}

/// Cheap to clone; every clone updates the same metrics.
#[derive(Clone)]
pub struct Telemetry {
    metrics: Arc<Metrics>,
}

impl Default for Telemetry {
    fn default() -> Self {
        Telemetry::new()
    }
}

impl Telemetry {
    pub fn new() -> Telemetry {
        let mut registry = Registry::with_prefix("omni_gateway");
        let metrics = Metrics {
            webhook_events: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            inbound_delivered: Counter::default(),
            inbound_held: Counter::default(),
            inbound_latency_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            rocketchat_errors: Family::default(),
            replies: Family::default(),
            send_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            inbox_depth: Gauge::default(),
            outbox_depth: Gauge::default(),
            held_conversations: Gauge::default(),
            rocketchat_up: Gauge::default(),
            pages: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "webhook_events",
            "Messenger webhook events by outcome (stored, duplicate, ignored, unknown_page)",
            metrics.webhook_events.clone(),
        );
        registry.register(
            "webhook_request_seconds",
            "Time from a webhook request's arrival to its durable 200",
            metrics.webhook_seconds.clone(),
        );
        registry.register(
            "inbound_delivered",
            "Customer events accepted by Rocket.Chat",
            metrics.inbound_delivered.clone(),
        );
        registry.register(
            "inbound_held",
            "Conversations held because no agent was online",
            metrics.inbound_held.clone(),
        );
        registry.register(
            "inbound_delivery_latency_seconds",
            "Time from a webhook's arrival to Rocket.Chat accepting the event",
            metrics.inbound_latency_seconds.clone(),
        );
        registry.register(
            "rocketchat_errors",
            "Failed Rocket.Chat calls by kind",
            metrics.rocketchat_errors.clone(),
        );
        registry.register(
            "inbox_depth",
            "Webhook events waiting for delivery",
            metrics.inbox_depth.clone(),
        );
        registry.register(
            "outbox_depth",
            "Agent replies waiting for the Send API",
            metrics.outbox_depth.clone(),
        );
        registry.register(
            "held_conversations",
            "Conversations waiting for an agent to come online",
            metrics.held_conversations.clone(),
        );
        registry.register(
            "rocketchat_link_up",
            "1 while logged in to Rocket.Chat over the realtime API",
            metrics.rocketchat_up.clone(),
        );
        registry.register(
            "page_status",
            "Connected pages by token state (1 = in that state)",
            metrics.pages.clone(),
        );
        Telemetry {
            metrics: Arc::new(Metrics {
                registry,
                ..metrics
            }),
        }
    }

    pub fn webhook_event(&self, outcome: &'static str, count: u64) {
        self.metrics
            .webhook_events
            .get_or_create(&vec![("outcome", outcome.to_owned())])
            .inc_by(count);
    }

    pub fn webhook_handled(&self, seconds: f64) {
        self.metrics.webhook_seconds.observe(seconds);
    }

    pub fn inbound_delivered(&self, latency_ms: u64) {
        self.metrics.inbound_delivered.inc();
        self.metrics
            .inbound_latency_seconds
            .observe(latency_ms as f64 / 1000.0);
    }

    pub fn inbound_held(&self) {
        self.metrics.inbound_held.inc();
    }

    pub fn rocketchat_error(&self, kind: &str) {
        self.metrics
            .rocketchat_errors
            .get_or_create(&vec![("kind", kind.to_owned())])
            .inc();
    }

    pub fn reply_sent(&self, seconds: f64) {
        self.reply_outcome("sent", String::new());
        self.metrics.send_seconds.observe(seconds);
    }

    pub fn reply_refused(&self) {
        self.reply_outcome("refused", String::new());
    }

    /// A failed Send API attempt, by Graph error code (or HTTP/transport when there is none).
    pub fn reply_failed(&self, err: &crate::messenger::graph::Error) {
        let code = err
            .graph_error()
            .map(|g| g.code.to_string())
            .unwrap_or_else(|| "transport".into());
        self.reply_outcome("failed", code);
    }

    fn reply_outcome(&self, outcome: &'static str, code: String) {
        self.metrics
            .replies
            .get_or_create(&vec![("outcome", outcome.to_owned()), ("code", code)])
            .inc();
    }

    /// Renders the Prometheus text exposition, after setting the gauges that are read on demand.
    pub fn render(&self, snapshot: &Snapshot) -> String {
        let m = &self.metrics;
        m.inbox_depth.set(snapshot.inbox_depth as i64);
        m.outbox_depth.set(snapshot.outbox_depth as i64);
        m.held_conversations.set(snapshot.held_conversations as i64);
        m.rocketchat_up.set(i64::from(snapshot.rocketchat_up));
        m.pages.clear();
        for (page, state) in &snapshot.pages {
            m.pages
                .get_or_create(&vec![
                    ("page", page.clone()),
                    ("state", (*state).to_owned()),
                ])
                .set(1);
        }
        let mut text = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut text, &m.registry);
        text
    }
}

/// Values read from the store and health at scrape time.
pub struct Snapshot {
    pub inbox_depth: usize,
    pub outbox_depth: usize,
    pub held_conversations: usize,
    pub rocketchat_up: bool,
    pub pages: Vec<(String, &'static str)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let telemetry = Telemetry::new();
        telemetry.webhook_event("stored", 3);
        telemetry.inbound_delivered(120);
        telemetry.rocketchat_error("server");
        let text = telemetry.render(&Snapshot {
            inbox_depth: 7,
            outbox_depth: 0,
            held_conversations: 1,
            rocketchat_up: true,
            pages: vec![("123".into(), "connected")],
        });
        for line in [
            "omni_gateway_webhook_events_total{outcome=\"stored\"} 3",
            "omni_gateway_inbound_delivered_total 1",
            "omni_gateway_rocketchat_errors_total{kind=\"server\"} 1",
            "omni_gateway_inbox_depth 7",
            "omni_gateway_rocketchat_link_up 1",
            "omni_gateway_page_status{page=\"123\",state=\"connected\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
