//! The soak: the real `omni-gateway` binary as a child process, between the in-process Rocket.Chat
//! and Graph simulators, carries a steady rate of full conversations for some minutes while its
//! memory (VmRSS) and the end-to-end latency are sampled. The question it answers: does the
//! gateway stay flat in memory and fast over time, or does something grow with every conversation?
//!
//! One conversation: a customer writes (signed webhook) → the gateway opens a Livechat room (new
//! visitor, welcome to the customer) → an agent answers → the answer reaches the Send API → the
//! agent closes the room → the customer gets the finished message. Every conversation closes its
//! room, so open rooms (and the gateway's room streams) stay bounded; one in [`RETURNING_EVERY`] is
//! a returning customer from a fixed pool, whose next question opens a new room on the same
//! conversation.
//!
//! The agent answers [`--think-ms`](Args::think) after the question lands (1 s by default: a
//! person reads first). The latency reported is the gateway's share of the conversation, its two
//! hops added up: webhook sent → the question in the room, and the agent's answer posted → the Send
//! API accepting it; the think time is not in it. With `--think-ms 0` the agent answers the instant
//! the question lands, often before the gateway's stream on the brand-new room is live: those
//! answers wait for the new room's catch-up back-fill (3 s), which is by design, and the p99 shows
//! it.
//!
//! The binary is the one cargo builds for this bench (`CARGO_BIN_EXE_omni-gateway`; with
//! `cargo bench` that is the release build, target/release/omni-gateway); `--binary PATH` runs
//! another. The page is connected through the real OAuth flow: `/facebook authorize` in the
//! admin's DM, the simulated dialog, the gateway's callback.
//!
//! `cargo bench --bench soak -- --minutes 10 --rate 50`; `--think-ms N` (default 1000),
//! `--cache-mib N` (sled's cache, default the gateway's 64 MiB), `--binary PATH`. Not part of CI.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use omni_sim::graph::GraphSim;
use omni_sim::ids::RoomId;
use omni_sim::rocketchat::{RocketChatSim, SimOptions};
use omni_testkit::daemon::Daemon;
use omni_testkit::webhook;
use omni_testkit::{APP_ID, APP_SECRET, BOT, BOT_PASSWORD, config_text_on_port};
use serde_json::json;
use tokio::time::Instant;

const ADMIN: &str = "alice";
const AGENT: &str = "sam";
const FB_ADMIN: &str = "900000000000001";
const PAGE: &str = "111111111111111";
const WELCOME: &str = "Hi! An agent will be with you shortly.";
const FINISHED: &str = "Thanks for chatting with us. Write any time!";
/// One conversation in this many comes from a returning customer.
const RETURNING_EVERY: u64 = 5;
/// Returning customers; at 20 conversations/s one of them writes again every 50 s, long after
/// their previous room closed.
const RETURNING_POOL: u64 = 200;
/// How often the child's VmRSS is read.
const RSS_EVERY: Duration = Duration::from_secs(10);
/// How long conversations still in flight may take to finish once the load stops.
const DRAIN: Duration = Duration::from_secs(30);
const PATIENCE: Duration = Duration::from_secs(20);

struct Args {
    minutes: f64,
    rate: f64,
    /// How long the agent takes to answer.
    think: Duration,
    /// `[store] cache_capacity_bytes`, in MiB; the gateway's default (64 MiB) when absent.
    cache_mib: Option<u64>,
    binary: PathBuf,
}

fn main() {
    let args = parse_args();
    omni_gateway::tls::install_crypto_provider();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let ok = runtime.block_on(soak(&args));
    if !ok {
        std::process::exit(1);
    }
}

fn parse_args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number = |name: &str, default: f64| {
        value(name).map_or(default, |v| {
            v.parse::<f64>()
                .ok()
                .filter(|n| *n > 0.0)
                .unwrap_or_else(|| panic!("{name} takes a positive number, not {v:?}"))
        })
    };
    Args {
        minutes: number("--minutes", 10.0),
        rate: number("--rate", 20.0),
        think: Duration::from_millis(value("--think-ms").map_or(1000, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--think-ms takes milliseconds, not {v:?}"))
        })),
        cache_mib: value("--cache-mib").map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--cache-mib takes MiB, not {v:?}"))
        }),
        binary: value("--binary").map_or_else(
            || PathBuf::from(env!("CARGO_BIN_EXE_omni-gateway")),
            PathBuf::from,
        ),
    }
}

/// What the load, the agent desk and the Send API watcher share.
#[derive(Default)]
struct Tracker {
    /// Conversations whose answer has not reached the Send API yet: number → webhook sent at.
    waiting: HashMap<u64, Instant>,
    /// Questions in a room whose answer has not reached the Send API yet.
    landed: HashMap<u64, Landed>,
    /// Every answered conversation.
    answered: Vec<Answered>,
    /// Webhook request → 200.
    acks: Vec<Duration>,
    refused: u64,
    welcomes: u64,
    finished: u64,
    closes: u64,
}

struct Landed {
    room: RoomId,
    /// Webhook sent → question in the room.
    inbound: Duration,
    /// When the agent posted the answer.
    replied: Option<Instant>,
}

struct Answered {
    /// When the conversation started, from the start of the load.
    at: Duration,
    inbound: Duration,
    /// Answer posted → Send API accepted it.
    outbound: Duration,
}

impl Answered {
    fn total(&self) -> Duration {
        self.inbound + self.outbound
    }
}

type Shared = Arc<Mutex<Tracker>>;

fn lock(tracker: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    tracker.lock().unwrap_or_else(|e| e.into_inner())
}

async fn soak(args: &Args) -> bool {
    let chat = RocketChatSim::start(SimOptions {
        // The set-up `check` asks for: the REST rate limiter off.
        rest_rate_limiter: false,
        ..SimOptions::default()
    })
    .await
    .expect("rocket.chat simulator");
    chat.set_setting("Message_AllowUnrecognizedSlashCommand", json!(true));
    chat.add_user(BOT, BOT_PASSWORD, &["bot"]);
    chat.grant_permission("bot", "view-full-other-user-info");
    chat.grant_permission("bot", "view-livechat-departments");
    chat.add_user(ADMIN, "alice-password", &["user", "admin"]);
    chat.add_user(AGENT, "sam-password", &["user", "livechat-agent"]);
    chat.add_department("Support", &[AGENT]);
    chat.set_agent_online(AGENT, true);
    let facebook = GraphSim::start(APP_ID, APP_SECRET)
        .await
        .expect("graph simulator");
    facebook.add_user(FB_ADMIN, "Alice Admin");
    facebook.add_page(FB_ADMIN, PAGE, "Acme Shop", &["MESSAGING", "MODERATE"]);
    facebook.set_dialog_user(FB_ADMIN);

    let dir = tempfile::tempdir().expect("scratch directory");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port();
    let config = dir.path().join("bot.toml");
    let mut text = config_text_on_port(
        chat.url().as_str(),
        facebook.url().as_str(),
        &dir.path().join("data"),
        port,
    );
    if let Some(mib) = args.cache_mib {
        text.push_str(&format!("cache_capacity_bytes = {}\n", mib * 1024 * 1024));
    }
    std::fs::write(&config, text).expect("bot.toml");
    let log = dir.path().join("gateway.log");
    let mut daemon = Daemon::start(&args.binary, &config, log.clone());
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    daemon.until_ready(&http, &base).await;
    connect_page(&chat, &http).await;
    eprintln!(
        "gateway pid {} ready, page connected; VmRSS {} KiB; {} conversations/s for {} min",
        daemon.pid(),
        support::rss_kib(daemon.pid()).unwrap_or(0),
        args.rate,
        args.minutes
    );

    let tracker: Shared = Arc::default();
    let started = Instant::now();
    let stop = tokio_util::sync::CancellationToken::new();
    let desk = tokio::spawn(agent_desk(
        chat.clone(),
        tracker.clone(),
        args.think,
        stop.clone(),
    ));
    let watcher = tokio::spawn(send_api_watcher(
        chat.clone(),
        facebook.clone(),
        tracker.clone(),
        started,
        stop.clone(),
    ));
    let pid = daemon.pid();
    let sampler = tokio::spawn(sample_rss(pid, started, tracker.clone(), stop.clone()));

    let duration = Duration::from_secs_f64(args.minutes * 60.0);
    let total = (args.rate * duration.as_secs_f64()).round() as u64;
    load(
        &facebook,
        &base,
        &tracker,
        args.rate,
        total,
        started + duration,
    )
    .await;
    let load_ended = started.elapsed();
    let drain_until = Instant::now() + DRAIN;
    while !lock(&tracker).waiting.is_empty() && Instant::now() < drain_until {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    let rss = sampler.await.expect("sampler");
    desk.await.expect("agent desk");
    watcher.await.expect("send api watcher");
    daemon.sigterm();
    let exit = match daemon.wait_exit(Duration::from_secs(10)).await {
        Some(status) => status.to_string(),
        None => "still running after 10 s, killed".to_owned(),
    };
    let log_text = std::fs::read_to_string(&log).unwrap_or_default();
    chat.shutdown().await;

    let tracker = std::mem::take(&mut *lock(&tracker));
    report(args, &tracker, &rss, load_ended, total);
    let problems: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .collect();
    println!(
        "\ngateway log: {} lines, {} KiB, {} warnings/errors; exit after SIGTERM: {exit}",
        log_text.lines().count(),
        log_text.len() / 1024,
        problems.len()
    );
    for line in problems.iter().take(10) {
        println!("  {line}");
    }
    tracker.waiting.is_empty() && tracker.refused == 0
}

/// One reading of the child, taken every [`RSS_EVERY`].
struct Sample {
    /// Since the load started.
    at: Duration,
    rss_kib: u64,
    /// CPU time (user + system) used so far by the gateway and by this process (the
    /// simulators and the load), in seconds.
    gateway_cpu: f64,
    driver_cpu: f64,
}

/// User + system CPU seconds of a process, from /proc/<pid>/stat (fields 14 and 15).
fn cpu_seconds(pid: &str) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return f64::NAN;
    };
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after_name = stat.rsplit(')').next().unwrap_or_default();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok());
    // SAFETY: sysconf only reads a configuration value.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    // After the name, utime is the 12th field and stime the 13th (0-based 11 and 12).
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / per_second,
        _ => f64::NAN,
    }
}

/// VmRSS of a process in KiB, from /proc/<pid>/status.
/// The admin connects the page through the real OAuth flow and configures it, as in the sandbox
/// tour.
async fn connect_page(chat: &RocketChatSim, http: &reqwest::Client) {
    let dm = chat.direct_room(BOT, ADMIN);
    let link = command(chat, &dm, "/facebook authorize", "dialog/oauth").await;
    let link = link
        .split_whitespace()
        .find(|w| w.starts_with("http"))
        .expect("the bot's answer holds the login link")
        .to_owned();
    let dialog = http.get(&link).send().await.expect("the dialog answers");
    let callback = dialog
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|v| v.to_str().ok())
        .expect("the dialog redirects to the callback")
        .to_owned();
    let page = http
        .get(&callback)
        .send()
        .await
        .expect("the callback answers");
    assert!(page.status().is_success(), "callback: {}", page.status());
    for (setting, value, expect) in [
        ("department", "Support", "department is now"),
        ("welcome", WELCOME, "welcome message updated"),
        ("finished", FINISHED, "finished message updated"),
    ] {
        command(
            chat,
            &dm,
            &format!("/facebook edit {PAGE} {setting} {value}"),
            expect,
        )
        .await;
    }
}

/// The admin types `text` in the bot's DM; returns the bot's answer containing `expect`.
async fn command(chat: &RocketChatSim, dm: &RoomId, text: &str, expect: &str) -> String {
    let before = chat.messages(dm).len();
    chat.post(ADMIN, dm, text);
    chat.wait_for_message(
        dm,
        |m| m.username == BOT && m.msg.contains(expect),
        PATIENCE,
    )
    .await
    .filter(|_| chat.messages(dm).len() > before)
    .map(|m| m.msg)
    .unwrap_or_else(|| {
        panic!(
            "the bot did not answer {text:?} with {expect:?}: {:#?}",
            chat.messages(dm)
        )
    })
}

/// Starts conversation after conversation at `rate` per second until `total` are started or
/// `until` passes. A late tick is caught up at once, so the average rate holds.
async fn load(
    facebook: &GraphSim,
    base: &str,
    tracker: &Shared,
    rate: f64,
    total: u64,
    until: Instant,
) {
    let url = format!("{base}/webhooks/messenger");
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut senders = tokio::task::JoinSet::new();
    for n in 0..total {
        ticks.tick().await;
        if Instant::now() >= until {
            break;
        }
        let psid = if n % RETURNING_EVERY == RETURNING_EVERY - 1 {
            format!(
                "{}",
                7_000_000_000_000_000u64 + n / RETURNING_EVERY % RETURNING_POOL
            )
        } else {
            format!("{}", 8_000_000_000_000_000u64 + n)
        };
        // The customer exists on Facebook and has just written, so the Send API window is open.
        facebook.add_psid(PAGE, &psid, "Customer", &n.to_string());
        let body = webhook::text_body(
            PAGE,
            &psid,
            &format!("m_soak_{n}"),
            &format!("question {n}"),
        );
        let facebook = facebook.clone();
        let url = url.clone();
        let tracker = tracker.clone();
        senders.spawn(async move {
            let sent = Instant::now();
            lock(&tracker).waiting.insert(n, sent);
            let status = facebook
                .deliver_webhook(&url, &body)
                .await
                .map(|r| r.status().as_u16());
            let mut tracker = lock(&tracker);
            match status {
                Ok(200) => tracker.acks.push(sent.elapsed()),
                other => {
                    eprintln!("conversation {n}: webhook answered {other:?}");
                    tracker.refused += 1;
                    tracker.waiting.remove(&n);
                }
            }
        });
        // Reap finished senders so the set stays small.
        while senders.try_join_next().is_some() {}
    }
    while senders.join_next().await.is_some() {}
}

/// An agent watching the queue: answers every "question N" `think` after it lands in a room.
async fn agent_desk(
    chat: RocketChatSim,
    tracker: Shared,
    think: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut cursor = 0;
    let mut answers = tokio::task::JoinSet::new();
    while !stop.is_cancelled() {
        let (new, next) = chat
            .messages_after(cursor, Duration::from_millis(200))
            .await;
        cursor = next;
        let now = Instant::now();
        for message in new {
            let Some(n) = message
                .msg
                .strip_prefix("question ")
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(sent) = lock(&tracker).waiting.get(&n).copied() else {
                continue;
            };
            if message.token.is_none() {
                continue;
            }
            lock(&tracker).landed.insert(
                n,
                Landed {
                    room: message.rid.clone(),
                    inbound: now.duration_since(sent),
                    replied: None,
                },
            );
            let chat = chat.clone();
            let tracker = tracker.clone();
            answers.spawn(async move {
                tokio::time::sleep(think).await;
                if let Some(landed) = lock(&tracker).landed.get_mut(&n) {
                    landed.replied = Some(Instant::now());
                }
                chat.agent_reply(AGENT, &message.rid, &format!("answer {n}"));
            });
        }
        while answers.try_join_next().is_some() {}
    }
    answers.abort_all();
}

/// Watches the Send API: an answer ends its conversation's latency and the agent closes the room;
/// welcomes and finished messages are counted.
async fn send_api_watcher(
    chat: RocketChatSim,
    facebook: GraphSim,
    tracker: Shared,
    started: Instant,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut cursor = 0;
    while !stop.is_cancelled() {
        let (new, next) = facebook
            .sent_after(cursor, Duration::from_millis(200))
            .await;
        cursor = next;
        let now = Instant::now();
        for message in new {
            let text = message.text.as_deref().unwrap_or_default();
            let mut t = lock(&tracker);
            if text == WELCOME {
                t.welcomes += 1;
            } else if text == FINISHED {
                t.finished += 1;
            } else if let Some(n) = text
                .strip_prefix("answer ")
                .and_then(|n| n.parse::<u64>().ok())
            {
                let Some(sent) = t.waiting.remove(&n) else {
                    continue;
                };
                let Some(landed) = t.landed.remove(&n) else {
                    continue;
                };
                let replied = landed.replied.unwrap_or(now);
                t.answered.push(Answered {
                    at: sent.duration_since(started),
                    inbound: landed.inbound,
                    outbound: now.duration_since(replied),
                });
                t.closes += 1;
                drop(t);
                chat.close_room(&landed.room, AGENT);
            }
        }
    }
}

/// Reads the child's VmRSS and both processes' CPU time every [`RSS_EVERY`] until stopped, and
/// once more at the end.
async fn sample_rss(
    pid: u32,
    started: Instant,
    tracker: Shared,
    stop: tokio_util::sync::CancellationToken,
) -> Vec<Sample> {
    let mut samples = Vec::new();
    let mut every = tokio::time::interval(RSS_EVERY);
    loop {
        let stopped = tokio::select! {
            _ = every.tick() => false,
            _ = stop.cancelled() => true,
        };
        let Some(rss_kib) = support::rss_kib(pid) else {
            eprintln!("cannot read /proc/{pid}/status: the gateway is gone");
            return samples;
        };
        let sample = Sample {
            at: started.elapsed(),
            rss_kib,
            gateway_cpu: cpu_seconds(&pid.to_string()),
            driver_cpu: cpu_seconds("self"),
        };
        let t = lock(&tracker);
        eprintln!(
            "{:>6.0} s  VmRSS {:>7} KiB  CPU s gateway {:>7.1} simulators+load {:>7.1}  answered {:>6}  waiting {:>4}",
            sample.at.as_secs_f64(),
            sample.rss_kib,
            sample.gateway_cpu,
            sample.driver_cpu,
            t.answered.len(),
            t.waiting.len()
        );
        samples.push(sample);
        if stopped {
            return samples;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len() - 1);
    sorted[i].as_secs_f64() * 1000.0
}

fn report(args: &Args, t: &Tracker, rss: &[Sample], load_ended: Duration, total: u64) {
    let minutes = args.minutes.ceil() as usize;
    let mib = |kib: u64| kib as f64 / 1024.0;
    let ms = |d: Option<&Duration>| d.map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0);
    println!(
        "\n| minute | conversations | conversations/s | p50 ms | p99 ms | max ms | inbound p99 ms | outbound p99 ms | VmRSS MiB | gateway CPU % | simulators+load CPU % |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for minute in 0..minutes {
        let these: Vec<&Answered> = t
            .answered
            .iter()
            .filter(|a| a.at.as_secs() / 60 == minute as u64)
            .collect();
        let sorted = |f: &dyn Fn(&Answered) -> Duration| {
            let mut v: Vec<Duration> = these.iter().map(|a| f(a)).collect();
            v.sort();
            v
        };
        let totals = sorted(&Answered::total);
        let inbound = sorted(&|a| a.inbound);
        let outbound = sorted(&|a| a.outbound);
        let span = (load_ended.as_secs_f64() - minute as f64 * 60.0).clamp(1.0, 60.0);
        let in_minute = |s: &&Sample| s.at.as_secs() <= (minute as u64 + 1) * 60;
        let first = rss.iter().rfind(|s| s.at.as_secs() <= minute as u64 * 60);
        let last = rss.iter().rfind(in_minute);
        let rss_at_end = last.map_or(f64::NAN, |s| mib(s.rss_kib));
        let cpu = |f: &dyn Fn(&Sample) -> f64| match (first, last) {
            (Some(a), Some(b)) if b.at > a.at => {
                100.0 * (f(b) - f(a)) / (b.at - a.at).as_secs_f64()
            }
            _ => f64::NAN,
        };
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} |",
            minute + 1,
            totals.len(),
            totals.len() as f64 / span,
            percentile(&totals, 0.50),
            percentile(&totals, 0.99),
            ms(totals.last()),
            percentile(&inbound, 0.99),
            percentile(&outbound, 0.99),
            rss_at_end,
            cpu(&|s| s.gateway_cpu),
            cpu(&|s| s.driver_cpu),
        );
    }
    let mut all: Vec<Duration> = t.answered.iter().map(Answered::total).collect();
    all.sort();
    let mut acks = t.acks.clone();
    acks.sort();
    let rss_start = rss.first().map_or(0, |s| s.rss_kib);
    let rss_end = rss.last().map_or(0, |s| s.rss_kib);
    let rss_max = rss.iter().map(|s| s.rss_kib).max().unwrap_or(0);
    println!(
        "\nsummary: {} of {total} planned conversations answered over {:.1} min of load ({:.1}/s asked, \
         {:.2}/s achieved); gateway latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (agent think \
         time {} ms not included); webhook 200 p99 {:.1} ms; VmRSS start {:.1} MiB, end {:.1} MiB, \
         max {:.1} MiB",
        all.len(),
        load_ended.as_secs_f64() / 60.0,
        args.rate,
        all.len() as f64 / load_ended.as_secs_f64(),
        percentile(&all, 0.50),
        percentile(&all, 0.99),
        ms(all.last()),
        args.think.as_millis(),
        percentile(&acks, 0.99),
        mib(rss_start),
        mib(rss_end),
        mib(rss_max),
    );
    println!(
        "checks: {} unanswered, {} webhooks refused, {} welcomes, {} rooms closed, {} finished messages",
        t.waiting.len(),
        t.refused,
        t.welcomes,
        t.closes,
        t.finished
    );
}
