//! Log capture: what the gateway logged, as text, for tests that check a log line is written (or
//! that a secret never is).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use tracing::subscriber::DefaultGuard;

/// A captured log. From [`Logs::capture`] it holds this test's lines only while it lives; from
/// [`Logs::global`] every line of the test binary.
pub struct Logs {
    buffer: Arc<Mutex<Vec<u8>>>,
    _guard: Option<DefaultGuard>,
}

impl Logs {
    /// Captures this thread's log at `filter` (an `EnvFilter` directive such as
    /// `"omni_gateway=info"`) until dropped. Tests run on tokio's current-thread runtime, so a
    /// thread-local subscriber sees the gateway's tasks of this test and no other test's.
    pub fn capture(filter: &str) -> Logs {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let guard = tracing::subscriber::set_default(subscriber(filter, &buffer));
        Logs {
            buffer,
            _guard: Some(guard),
        }
    }

    /// Every line any test of this binary logs at `filter`, from the first call on (the first
    /// call's filter holds): for checks that must also see threads other than the test's own
    /// (blocking store work).
    pub fn global(filter: &str) -> Logs {
        static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
        let buffer = BUFFER.get_or_init(|| {
            let buffer = Arc::new(Mutex::new(Vec::new()));
            tracing::subscriber::set_global_default(subscriber(filter, &buffer))
                .expect("no other global subscriber in this test binary");
            buffer
        });
        Logs {
            buffer: buffer.clone(),
            _guard: None,
        }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.buffer.lock().expect("log buffer")).into_owned()
    }

    /// Captured lines that contain every one of `parts`.
    pub fn lines(&self, parts: &[&str]) -> Vec<String> {
        self.text()
            .lines()
            .filter(|line| parts.iter().all(|p| line.contains(p)))
            .map(str::to_owned)
            .collect()
    }
}

fn subscriber(filter: &str, buffer: &Arc<Mutex<Vec<u8>>>) -> impl tracing::Subscriber + use<> {
    let sink = buffer.clone();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || LogWriter(sink.clone()))
        .finish()
}

struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .map_err(|_| std::io::Error::other("log buffer poisoned"))?
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
