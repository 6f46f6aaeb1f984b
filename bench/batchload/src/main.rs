//! batchload: closed-loop load for `POST /webhooks/messenger` where every request carries
//! several message events, as Meta sends them when it batches deliveries.
//!
//! Before the clock starts it builds a pool of distinct signed bodies (signing is not what
//! we measure), opens `--connections` keep-alive HTTP/1.1 connections, and then each
//! connection sends its next body as soon as the previous answer has been read, until
//! `--duration` has passed. One JSON line on stdout sums it up; notes go to stderr.
//!
//! Batch shape: one body holds `--events` items in `entry[]`, each with exactly one event in
//! its `messaging[]`. Meta's webhook guide says "entry is an array and may contain multiple
//! objects, so ensure your code iterates over it to process all events"
//! (<https://developers.facebook.com/docs/messenger-platform/webhooks>), while the event
//! reference says `messaging` "will only contain one messaging object"
//! (<https://developers.facebook.com/docs/messenger-platform/reference/webhook-events>).
//! So several `entry` items is the batching Meta documents today.

use std::fmt::Write as _;
use std::net::{SocketAddr, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hmac::{Hmac, KeyInit, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::header::{CONTENT_TYPE, HOST, HeaderName, HeaderValue, USER_AGENT};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;
use tokio::time::Instant;

type HmacSha256 = Hmac<Sha256>;

const USAGE: &str = "usage: batchload --url http://HOST:PORT/webhooks/messenger --secret SECRET
  [--events 10] [--page 1111] [--psids 1000] [--connections 32] [--duration 10]
  [--pool BODIES] [--timeout 30]
  --events N       message events per request (entry items of one messaging event each)
  --psids N        distinct senders the events are spread over
  --pool BODIES    bodies built before the run (default: 400,000 events per second of
                   --duration, at most 4,000,000 events); past it, bodies are built during
                   the run (still distinct) and the JSON line counts them in built_live
  --timeout S      seconds before a request counts as an error";

/// Latencies are recorded in microseconds, up to an hour.
const HIST_MAX_US: u64 = 3_600_000_000;

struct Options {
    addr: SocketAddr,
    authority: HeaderValue,
    path: Uri,
    secret: String,
    events: usize,
    page: u64,
    psids: u64,
    connections: usize,
    duration: Duration,
    pool: Option<usize>,
    timeout: Duration,
}

impl Options {
    fn parse(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
        let (mut url, mut secret) = (None, None);
        let (mut events, mut page, mut psids, mut connections) =
            (10usize, 1111u64, 1000u64, 32usize);
        let (mut duration, mut pool, mut timeout) = (10.0f64, None, 30.0f64);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((f, v)) => (f.to_string(), Some(v.to_string())),
                None => (arg, None),
            };
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            let value = inline
                .or_else(|| args.next())
                .ok_or_else(|| format!("{flag} needs a value"))?;
            match flag.as_str() {
                "--url" => url = Some(value),
                "--secret" => secret = Some(value),
                "--events" => events = number(&flag, &value)?,
                "--page" => page = number(&flag, &value)?,
                "--psids" => psids = number(&flag, &value)?,
                "--connections" => connections = number(&flag, &value)?,
                "--duration" => duration = number(&flag, &value)?,
                "--pool" => pool = Some(number(&flag, &value)?),
                "--timeout" => timeout = number(&flag, &value)?,
                _ => return Err(format!("unknown flag {flag}")),
            }
        }
        let url: Uri = url
            .ok_or("--url is required")?
            .parse()
            .map_err(|e| format!("--url: {e}"))?;
        if url.scheme_str() != Some("http") {
            return Err("--url must start with http:// (plain HTTP/1.1)".into());
        }
        let host = url.host().ok_or("--url has no host")?;
        let port = url.port_u16().unwrap_or(80);
        let addr = (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("--url host {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("--url host {host} resolves to no address"))?;
        let authority = HeaderValue::from_str(&format!("{host}:{port}"))
            .map_err(|e| format!("--url host: {e}"))?;
        let path = url
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()
            .map_err(|e| format!("--url path: {e}"))?;
        if events == 0 || psids == 0 || connections == 0 {
            return Err("--events, --psids and --connections must be at least 1".into());
        }
        for (name, seconds) in [("--duration", duration), ("--timeout", timeout)] {
            if !(seconds.is_finite() && seconds > 0.0) {
                return Err(format!("{name} must be a positive number of seconds"));
            }
        }
        Ok(Options {
            addr,
            authority,
            path,
            secret: secret.ok_or("--secret is required")?,
            events,
            page,
            psids,
            connections,
            duration: Duration::from_secs_f64(duration),
            pool,
            timeout: Duration::from_secs_f64(timeout),
        })
    }

    /// Bodies to build before the run: enough for 400,000 events a second (a durable server
    /// that only appends and syncs takes about 30,000 ten-event requests a second on two
    /// cores), capped at 4,000,000 events, about 1.3 GB of ten-event bodies.
    fn pool_bodies(&self) -> usize {
        let budget = (self.duration.as_secs_f64().ceil() as usize)
            .saturating_mul(400_000)
            .min(4_000_000);
        self.pool
            .unwrap_or(budget / self.events)
            .max(self.connections)
    }
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| format!("{flag} {value:?}: {e}"))
}

// ---------------------------------------------------------------- bodies

/// splitmix64 finaliser: spreads a counter into well-mixed bits, so bodies vary without an
/// RNG and a run can be rebuilt from its seed.
fn scramble(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Customer messages as they appear inside Meta's JSON: non-ASCII is escaped as `\uXXXX`
/// (emoji as surrogate pairs), and the signature covers these exact bytes.
const TEXTS: &[&str] = &[
    r"Hello, my parcel still hasn't arrived. Tracking number ",
    r"Est-ce que vous livrez en Belgique ? Merci d\u2019avance",
    r"Hallo, gibt es den Mantel auch in Gr\u00f6\u00dfe L?",
    r"thank you so much \ud83d\ude0a",
    r"Can I pick up my order at the store on Saturday?",
    r"hi",
    r"\u00a1Hola! \u00bfPuedo cambiar la direcci\u00f3n de env\u00edo?",
    r"My card was charged twice for the same order, please refund one of the payments. I sent the screenshot yesterday but nobody has answered yet.",
    r"Is the sale on the winter boots still on?",
    r"\u3053\u3093\u306b\u3061\u306f\u3001\u5728\u5eab\u306f\u3042\u308a\u307e\u3059\u304b\uff1f",
    r"ok thanks \ud83d\udc4d",
    r"Do you sell gift cards, and can I send one by email?",
];

/// One request: the raw body and its `X-Hub-Signature-256` value.
struct Signed {
    body: Bytes,
    signature: HeaderValue,
}

/// Builds body number `n` of a run; bodies of one run never share a `mid`.
struct Batches {
    seed: u64,
    start_ms: u64,
    page: String,
    psids: Vec<String>,
    events: usize,
    key: HmacSha256,
}

impl Batches {
    fn new(options: &Options) -> Batches {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let seed = scramble(now.as_nanos() as u64 ^ u64::from(std::process::id()));
        // PSIDs are 16-digit page-scoped ids; the same set every run, so a server that keeps
        // conversations sees returning customers across runs.
        let psids = (0..options.psids)
            .map(|k| {
                (1_000_000_000_000_000 + scramble(0xB47C ^ k) % 9_000_000_000_000_000).to_string()
            })
            .collect();
        Batches {
            seed,
            start_ms: now.as_millis() as u64,
            page: options.page.to_string(),
            psids,
            events: options.events,
            // HMAC-SHA256 accepts a key of any length, so this cannot fail.
            key: HmacSha256::new_from_slice(options.secret.as_bytes())
                .expect("HMAC takes any key length"),
        }
    }

    fn build(&self, n: u64) -> Signed {
        let mut body = String::with_capacity(self.events * 360 + 32);
        body.push_str(r#"{"object":"page","entry":["#);
        for k in 0..self.events {
            if k > 0 {
                body.push(',');
            }
            self.push_entry(&mut body, n * self.events as u64 + k as u64);
        }
        body.push_str("]}");
        let mut mac = self.key.clone();
        mac.update(body.as_bytes());
        let digest = hex::encode(mac.finalize().into_bytes());
        // "sha256=" and hex digits are visible ASCII, always a valid header value.
        let signature =
            HeaderValue::from_str(&format!("sha256={digest}")).expect("ASCII header value");
        Signed {
            body: Bytes::from(body),
            signature,
        }
    }

    /// Event number `j` of the run as one `entry` item holding one `messaging` event.
    fn push_entry(&self, out: &mut String, j: u64) {
        let r = scramble(self.seed ^ j.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let psid = &self.psids[(r % self.psids.len() as u64) as usize];
        let text = TEXTS[(scramble(r) % TEXTS.len() as u64) as usize];
        // Meta's timestamp is when the customer sent the message: it never runs ahead of the
        // clock. At 1,000 events a millisecond (more than any run here sends) a run's
        // timestamps stay behind the clock, so the next run's follow them, as real traffic's
        // do. (At 16 a millisecond they ran ahead, and each run's events landed deep inside
        // the conversations still held from the last one.)
        let ts = self.start_ms + j / 1_000;
        // mid: "m_" and 86 base64url characters, like Meta's; the seed and event number make
        // it unique within the run, the rest is filler.
        let mut raw = [0u8; 64];
        raw[..8].copy_from_slice(&self.seed.to_be_bytes());
        raw[8..16].copy_from_slice(&j.to_be_bytes());
        for (i, chunk) in raw[16..].chunks_exact_mut(8).enumerate() {
            chunk.copy_from_slice(&scramble(r.wrapping_add(i as u64)).to_le_bytes());
        }
        let mid = URL_SAFE_NO_PAD.encode(raw);
        let page = &self.page;
        // Writing into a String cannot fail.
        let _ = write!(
            out,
            r#"{{"id":"{page}","time":{ts},"messaging":[{{"sender":{{"id":"{psid}"}},"recipient":{{"id":"{page}"}},"timestamp":{ts},"message":{{"mid":"m_{mid}","text":"{text}"#
        );
        if text.ends_with(' ') {
            let _ = write!(out, "{}", 10_000_000 + r % 90_000_000);
        }
        out.push_str(r#""}}]}"#);
    }
}

/// Builds bodies `0..n` on every core.
fn prebuild(batches: &Batches, n: usize) -> Vec<Signed> {
    let threads = std::thread::available_parallelism().map_or(1, |p| p.get());
    let per_thread = n.div_ceil(threads).max(1);
    std::thread::scope(|scope| {
        let parts: Vec<_> = (0..n)
            .step_by(per_thread)
            .map(|lo| {
                let hi = (lo + per_thread).min(n);
                scope.spawn(move || {
                    (lo..hi)
                        .map(|i| batches.build(i as u64))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        // A builder thread only formats strings and hashes them; a panic there is a bug here.
        parts
            .into_iter()
            .flat_map(|part| part.join().expect("body builder thread panicked"))
            .collect()
    })
}

// ---------------------------------------------------------------- load

struct Run {
    options: Options,
    batches: Batches,
    pool: Vec<Signed>,
    next: AtomicU64,
    built_live: AtomicU64,
    deadline: Instant,
}

/// What one connection saw.
struct Tally {
    latency_us: Histogram<u64>,
    ok: u64,
    non_2xx: u64,
    errors: u64,
    statuses: Vec<StatusCode>,
    last_error: Option<String>,
}

impl Tally {
    fn empty() -> Tally {
        Tally {
            latency_us: histogram(),
            ok: 0,
            non_2xx: 0,
            errors: 0,
            statuses: Vec::new(),
            last_error: None,
        }
    }
}

fn histogram() -> Histogram<u64> {
    // Constant, valid bounds (1 <= low, high >= 2 * low, 3 significant figures).
    Histogram::new_with_bounds(1, HIST_MAX_US, 3).expect("valid histogram bounds")
}

type Sender = SendRequest<Full<Bytes>>;

async fn connect(addr: SocketAddr) -> Result<Sender, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("nodelay: {e}"))?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends one request and reads the whole answer.
async fn exchange(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> Result<StatusCode, hyper::Error> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    Ok(status)
}

fn request(run: &Run, signed: Signed) -> Request<Full<Bytes>> {
    let mut request = Request::new(Full::new(signed.body));
    *request.method_mut() = Method::POST;
    *request.uri_mut() = run.options.path.clone();
    let headers = request.headers_mut();
    headers.insert(HOST, run.options.authority.clone());
    headers.insert(USER_AGENT, HeaderValue::from_static("facebookexternalua"));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        HeaderName::from_static("x-hub-signature-256"),
        signed.signature,
    );
    request
}

/// One closed-loop connection: next body as soon as the last answer is in, until the deadline.
async fn drive(run: Arc<Run>, mut sender: Option<Sender>) -> Tally {
    let mut tally = Tally::empty();
    while Instant::now() < run.deadline {
        let mut current = match sender.take() {
            Some(s) => s,
            None => match connect(run.options.addr).await {
                Ok(s) => s,
                Err(e) => {
                    tally.errors += 1;
                    tally.last_error = Some(e);
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        let n = run.next.fetch_add(1, Ordering::Relaxed);
        let signed = match run.pool.get(n as usize) {
            Some(s) => Signed {
                body: s.body.clone(),
                signature: s.signature.clone(),
            },
            None => {
                run.built_live.fetch_add(1, Ordering::Relaxed);
                run.batches.build(n)
            }
        };
        let sent = Instant::now();
        match tokio::time::timeout(
            run.options.timeout,
            exchange(&mut current, request(&run, signed)),
        )
        .await
        {
            Ok(Ok(status)) => {
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally.latency_us.saturating_record(us.max(1));
                if status.is_success() {
                    tally.ok += 1;
                } else {
                    tally.non_2xx += 1;
                    tally.statuses.push(status);
                }
                sender = Some(current);
            }
            // The connection is dropped with `current`; the next turn opens a new one.
            Ok(Err(e)) => {
                tally.errors += 1;
                tally.last_error = Some(e.to_string());
            }
            Err(_) => {
                tally.errors += 1;
                tally.last_error = Some(format!("no answer within {:?}", run.options.timeout));
            }
        }
    }
    tally
}

/// CPU seconds (user + system, all threads) this process has used, from `/proc/self/stat`.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // After the ")" that closes the command name, utime and stime are the 12th and 13th
    // fields, in clock ticks of 1/100 s (USER_HZ, fixed at 100 on Linux).
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(message) => {
            if !message.is_empty() {
                eprintln!("batchload: {message}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let batches = Batches::new(&options);
    let built_at = Instant::now();
    let pool = prebuild(&batches, options.pool_bodies());
    let bytes: usize = pool.iter().map(|s| s.body.len()).sum();
    eprintln!(
        "batchload: built {} bodies of {} events (avg {} B) in {:.2} s",
        pool.len(),
        options.events,
        bytes / pool.len().max(1),
        built_at.elapsed().as_secs_f64()
    );

    // Every connection is open before the clock starts.
    let mut senders = Vec::with_capacity(options.connections);
    for _ in 0..options.connections {
        match connect(options.addr).await {
            Ok(s) => senders.push(Some(s)),
            Err(e) => {
                eprintln!(
                    "batchload: cannot reach {}: {e}; is the server running?",
                    options.addr
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let cpu_before = cpu_seconds();
    let start = Instant::now();
    let run = Arc::new(Run {
        deadline: start + options.duration,
        options,
        batches,
        pool,
        next: AtomicU64::new(0),
        built_live: AtomicU64::new(0),
    });
    let tasks: Vec<_> = senders
        .into_iter()
        .map(|s| tokio::spawn(drive(run.clone(), s)))
        .collect();
    let mut total = Tally::empty();
    for task in tasks {
        match task.await {
            Ok(t) => {
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.latency_us.add(&t.latency_us);
                total.ok += t.ok;
                total.non_2xx += t.non_2xx;
                total.errors += t.errors;
                total.statuses.extend(t.statuses);
                total.last_error = total.last_error.or(t.last_error);
            }
            Err(e) => {
                eprintln!("batchload: a connection task failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let seconds = start.elapsed().as_secs_f64();
    let client_cpu = match (cpu_before, cpu_seconds()) {
        (Some(a), Some(b)) => format!("{:.2}", (b - a) / seconds),
        _ => "null".into(),
    };
    let built_live = run.built_live.load(Ordering::Relaxed);
    if built_live > 0 {
        eprintln!(
            "batchload: {built_live} bodies were built during the run (the pool of {} ran out; raise --pool)",
            run.pool.len()
        );
    }
    if total.non_2xx > 0 || total.errors > 0 {
        total.statuses.sort_unstable();
        total.statuses.dedup();
        eprintln!(
            "batchload: non-2xx statuses {:?}; last error: {}",
            total
                .statuses
                .iter()
                .map(|s| s.as_u16())
                .collect::<Vec<_>>(),
            total.last_error.as_deref().unwrap_or("none")
        );
    }
    let events = run.options.events;
    let rps = total.ok as f64 / seconds;
    let quantile_ms = |q: f64| {
        if total.latency_us.is_empty() {
            0.0
        } else {
            total.latency_us.value_at_quantile(q) as f64 / 1000.0
        }
    };
    println!(
        concat!(
            r#"{{"events_per_request":{},"requests":{},"ok":{},"non_2xx":{},"errors":{},"#,
            r#""seconds":{:.3},"rps":{:.1},"eps":{:.1},"p50_ms":{:.3},"p99_ms":{:.3},"#,
            r#""client_cpu":{},"built_live":{}}}"#
        ),
        events,
        total.ok + total.non_2xx + total.errors,
        total.ok,
        total.non_2xx,
        total.errors,
        seconds,
        rps,
        rps * events as f64,
        quantile_ms(0.50),
        quantile_ms(0.99),
        client_cpu,
        built_live,
    );
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    fn options(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|a| a.to_string()))
    }

    #[test]
    fn bodies_are_signed_batches_of_distinct_message_events() {
        let opts = options(&[
            "--url",
            "http://127.0.0.1:9/webhooks/messenger",
            "--secret",
            "s3cret",
            "--events=7",
            "--page",
            "4242",
            "--psids",
            "3",
        ])
        .expect("valid options");
        let batches = Batches::new(&opts);
        let mut mids = HashSet::new();
        let mut senders = HashSet::new();
        for n in 0..20 {
            let signed = batches.build(n);
            let mut mac = HmacSha256::new_from_slice(b"s3cret").expect("any key length");
            mac.update(&signed.body);
            let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
            assert_eq!(signed.signature.to_str().ok(), Some(expected.as_str()));

            let json: serde_json::Value =
                serde_json::from_slice(&signed.body).expect("body is JSON");
            assert_eq!(json["object"], "page");
            let entries = json["entry"].as_array().expect("entry is an array");
            assert_eq!(entries.len(), 7);
            for entry in entries {
                assert_eq!(entry["id"], "4242");
                let messaging = entry["messaging"]
                    .as_array()
                    .expect("messaging is an array");
                assert_eq!(messaging.len(), 1);
                let event = &messaging[0];
                assert_eq!(event["recipient"]["id"], "4242");
                assert_eq!(event["timestamp"], entry["time"]);
                let mid = event["message"]["mid"].as_str().expect("mid is a string");
                assert_eq!(mid.len(), 88, "{mid}");
                assert!(mids.insert(mid.to_string()), "mid {mid} repeats");
                assert!(
                    !event["message"]["text"]
                        .as_str()
                        .unwrap_or_default()
                        .is_empty()
                );
                senders.insert(event["sender"]["id"].to_string());
            }
        }
        assert_eq!(senders.len(), 3);
    }

    #[test]
    fn bad_options_are_refused_with_the_flag_named() {
        let url = "http://127.0.0.1:9/webhooks/messenger";
        for (args, expected) in [
            (vec!["--secret", "s"], "--url is required"),
            (vec!["--url", url], "--secret is required"),
            (
                vec!["--url", "https://example.com/", "--secret", "s"],
                "--url must start with http://",
            ),
            (
                vec!["--url", url, "--secret", "s", "--events", "0"],
                "--events, --psids and --connections must be at least 1",
            ),
            (
                vec!["--url", url, "--secret", "s", "--events", "ten"],
                "--events \"ten\"",
            ),
            (
                vec!["--url", url, "--secret", "s", "--duration", "-1"],
                "--duration must be a positive number",
            ),
            (
                vec!["--url", url, "--secret", "s", "--rate", "5"],
                "unknown flag --rate",
            ),
            (vec!["--url", url, "--secret"], "--secret needs a value"),
        ] {
            match options(&args) {
                Ok(_) => panic!("{args:?} was accepted"),
                Err(message) => assert!(message.starts_with(expected), "{args:?}: {message}"),
            }
        }
    }
}
