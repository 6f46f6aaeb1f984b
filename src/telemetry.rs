//! Metrics, kept next to the events they count so logs and metrics never disagree. Rendered as
//! Prometheus text at `/metrics`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// What [`Telemetry::webhook_event`] is called with.
const WEBHOOK_OUTCOMES: [&str; 4] = ["stored", "duplicate", "ignored", "unknown_page"];
/// What [`Telemetry::rocketchat_error`] is called with: `rest::Error::kind` and `no_agent_online`.
const ROCKETCHAT_ERROR_KINDS: [&str; 8] = [
    "api",
    "rate_limited",
    "unauthorized",
    "server",
    "transport",
    "decode",
    "not_logged_in",
    "no_agent_online",
];
/// The routes with their own, low limit (see [`LIVECHAT_LIMITS`]).
const LIMITED_ROUTES: [&str; 2] = ["livechat/visitor", "livechat/room"];

/// The window `/facebook status` and `check` report 429s over.
pub const RATE_LIMIT_WINDOW: Duration = Duration::from_secs(3600);

/// What Rocket.Chat's own per-route limits mean for a gateway, said by `/facebook status` and
/// `check`. `livechat/visitor` and `livechat/room` set `rateLimiterOptions` of 5 calls per
/// 60 s per client IP (`apps/meteor/app/livechat/server/api/v1/visitor.ts`, `.../room.ts`), which
/// the general API limiter settings do not raise; only turning the API rate limiter off does.
pub const LIVECHAT_LIMITS: &str = "livechat/visitor and livechat/room allow 5 calls per 60 s per client IP by default, so at most 5 new conversations a minute start through one gateway; the rest wait, in order, for the limit to reset (only turning off Administration → Settings → Rate Limiter → API Rate Limiter lifts it)";

/// One line: `livechat/room 12, livechat/visitor 3`, or `none`.
pub fn describe_rate_limited(counts: &[(String, u64)]) -> String {
    if counts.is_empty() {
        return "none".to_owned();
    }
    counts
        .iter()
        .map(|(route, count)| format!("{route} {count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// HTTP 429s from Rocket.Chat, by route: a counter for dashboards and the last hour's events for
/// `/facebook status` and `/metrics`. Shared by every clone of the REST client that saw them.
#[derive(Default)]
pub struct RateLimits {
    total: Family<Labels, Counter>,
    recent: Mutex<VecDeque<(Instant, String)>>,
}

impl RateLimits {
    /// One 429 on `route` (as the REST client names it, ids included).
    pub fn record(&self, route: &str) {
        let pattern = route_pattern(route);
        self.total
            .get_or_create(&vec![("route", pattern.clone())])
            .inc();
        let now = Instant::now();
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut recent, now);
        recent.push_back((now, pattern));
    }

    /// 429s per route within [`RATE_LIMIT_WINDOW`], by route name.
    pub fn last_hour(&self) -> Vec<(String, u64)> {
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        prune(&mut recent, Instant::now());
        let mut counts = std::collections::BTreeMap::<String, u64>::new();
        for (_, route) in recent.iter() {
            *counts.entry(route.clone()).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

fn prune(recent: &mut VecDeque<(Instant, String)>, now: Instant) {
    while recent
        .front()
        .is_some_and(|(at, _)| now.duration_since(*at) > RATE_LIMIT_WINDOW)
    {
        recent.pop_front();
    }
}

/// Rocket.Chat keys its limiter on the route pattern (`livechat/message/:_id`), not the path
/// (`apps/meteor/app/api/server/ApiClass.ts`), so ids become `:id`: every room shares one bucket,
/// and the metric's label set stays small.
pub fn route_pattern(route: &str) -> String {
    let mut parts = route.splitn(3, '/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(a), Some(b), Some(_)) => format!("{a}/{b}/:id"),
        _ => route.to_owned(),
    }
}

struct Metrics {
    registry: Registry,
    webhook_events: Family<Labels, Counter>,
    webhook_seconds: Histogram,
    inbound_delivered: Counter,
    inbound_held: Counter,
    inbound_set_aside: Counter,
    inbound_latency_seconds: Histogram,
    rocketchat_errors: Family<Labels, Counter>,
    replies: Family<Labels, Counter>,
    send_seconds: Histogram,
    inbox_depth: Gauge,
    outbox_depth: Gauge,
    held_conversations: Gauge,
    oldest_held_seconds: Gauge,
    rate_limits: Arc<RateLimits>,
    rate_limited_last_hour: Family<Labels, Gauge>,
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
        Telemetry::with_rate_limits(Arc::default())
    }

    /// Metrics that also export the 429s `rate_limits` records (the REST client's).
    pub fn with_rate_limits(rate_limits: Arc<RateLimits>) -> Telemetry {
        let mut registry = Registry::with_prefix("omni_gateway");
        let metrics = Metrics {
            webhook_events: Family::default(),
            webhook_seconds: Histogram::new(exponential_buckets(0.0005, 2.0, 14)),
            inbound_delivered: Counter::default(),
            inbound_held: Counter::default(),
            inbound_set_aside: Counter::default(),
            inbound_latency_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 18)),
            rocketchat_errors: Family::default(),
            replies: Family::default(),
            send_seconds: Histogram::new(exponential_buckets(0.005, 2.0, 16)),
            inbox_depth: Gauge::default(),
            outbox_depth: Gauge::default(),
            held_conversations: Gauge::default(),
            oldest_held_seconds: Gauge::default(),
            rate_limited_last_hour: Family::default(),
            rocketchat_up: Gauge::default(),
            pages: Family::default(),
            registry: Registry::default(),
            rate_limits,
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
            "inbound_set_aside",
            "Customer events Rocket.Chat refused for good, set aside until an admin retries them (the reason is in the log and in `/facebook status`)",
            metrics.inbound_set_aside.clone(),
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
            "rocketchat_rate_limited",
            "HTTP 429 answers from Rocket.Chat by route pattern",
            metrics.rate_limits.total.clone(),
        );
        registry.register(
            "rocketchat_rate_limited_last_hour",
            "HTTP 429 answers from Rocket.Chat by route pattern within the last hour",
            metrics.rate_limited_last_hour.clone(),
        );
        registry.register(
            "replies",
            "Agent replies to the Send API by outcome (sent, refused, failed) and Graph error code",
            metrics.replies.clone(),
        );
        registry.register(
            "reply_send_seconds",
            "Time the Send API took to accept a reply",
            metrics.send_seconds.clone(),
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
            "held_oldest_seconds",
            "How long the longest-held conversation has waited for an agent (0 when none is held)",
            metrics.oldest_held_seconds.clone(),
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
        // Known label values start at 0, so `/metrics` declares every family from the first
        // scrape and `increase()` sees the first event.
        for outcome in WEBHOOK_OUTCOMES {
            metrics
                .webhook_events
                .get_or_create(&vec![("outcome", outcome.to_owned())])
                .inc_by(0);
        }
        for kind in ROCKETCHAT_ERROR_KINDS {
            metrics
                .rocketchat_errors
                .get_or_create(&vec![("kind", kind.to_owned())])
                .inc_by(0);
        }
        for outcome in ["sent", "refused"] {
            metrics
                .replies
                .get_or_create(&vec![
                    ("outcome", outcome.to_owned()),
                    ("code", String::new()),
                ])
                .inc_by(0);
        }
        for route in LIMITED_ROUTES {
            metrics
                .rate_limits
                .total
                .get_or_create(&vec![("route", route.to_owned())])
                .inc_by(0);
        }
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

    pub fn inbound_set_aside(&self) {
        self.metrics.inbound_set_aside.inc();
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
        m.oldest_held_seconds
            .set(i64::try_from(snapshot.oldest_held.as_secs()).unwrap_or(i64::MAX));
        m.rate_limited_last_hour.clear();
        for (route, count) in m.rate_limits.last_hour() {
            m.rate_limited_last_hour
                .get_or_create(&vec![("route", route)])
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
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
    /// How long the longest-held conversation has waited (zero when none is held).
    pub oldest_held: Duration,
    pub rocketchat_up: bool,
    pub pages: Vec<(String, &'static str)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_patterns_hide_ids() {
        assert_eq!(route_pattern("livechat/room"), "livechat/room");
        assert_eq!(
            route_pattern("livechat/message/abc123"),
            "livechat/message/:id"
        );
        assert_eq!(
            route_pattern("livechat/messages.history/r1"),
            "livechat/messages.history/:id"
        );
        assert_eq!(route_pattern("chat.sendMessage"), "chat.sendMessage");
    }

    #[test]
    fn renders_prometheus_text() {
        let rate_limits = Arc::new(RateLimits::default());
        rate_limits.record("livechat/room");
        rate_limits.record("livechat/room");
        rate_limits.record("livechat/message/m1");
        assert_eq!(
            rate_limits.last_hour(),
            [
                ("livechat/message/:id".to_owned(), 1),
                ("livechat/room".to_owned(), 2)
            ]
        );
        let telemetry = Telemetry::with_rate_limits(rate_limits);
        telemetry.webhook_event("stored", 3);
        telemetry.inbound_delivered(120);
        telemetry.rocketchat_error("server");
        let text = telemetry.render(&Snapshot {
            inbox_depth: 7,
            outbox_depth: 0,
            held_conversations: 1,
            oldest_held: Duration::from_secs(90),
            rocketchat_up: true,
            pages: vec![("123".into(), "connected")],
        });
        for line in [
            "omni_gateway_webhook_events_total{outcome=\"stored\"} 3",
            "omni_gateway_inbound_delivered_total 1",
            "omni_gateway_rocketchat_errors_total{kind=\"server\"} 1",
            "omni_gateway_inbox_depth 7",
            "omni_gateway_held_oldest_seconds 90",
            "omni_gateway_rocketchat_rate_limited_total{route=\"livechat/room\"} 2",
            "omni_gateway_rocketchat_rate_limited_last_hour{route=\"livechat/room\"} 2",
            "omni_gateway_rocketchat_link_up 1",
            "omni_gateway_page_status{page=\"123\",state=\"connected\"} 1",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }
}
