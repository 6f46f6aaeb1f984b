//! What an admin sees of the real binary: log lines without escape codes when stderr is a file,
//! `<N>` priorities and no timestamps under systemd's journal, the example bot.toml refused with
//! one line per placeholder and EX_CONFIG, and `--version` naming the commit.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use omni_testkit::Chat;
use omni_testkit::daemon::Installed;
use omni_testkit::messenger::{Facebook, PageSetup};

const BINARY: &str = env!("CARGO_BIN_EXE_omni-gateway");

/// Starts `run` on `config` with stdout and stderr both appended to `log`, as systemd or a
/// shell redirection (`>log 2>&1`) would, and with `env` added.
fn spawn(config: &Path, log: &Path, env: &[(&str, String)]) -> Child {
    let out = File::create(log).expect("log file");
    let err = out.try_clone().expect("log file handle");
    let mut command = Command::new(BINARY);
    command
        .args(["run", "--config"])
        .arg(config)
        .env("RUST_LOG", "info")
        .env_remove("NO_COLOR")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    for (key, value) in env {
        command.env(key, value);
    }
    command.spawn().expect("the binary starts")
}

/// `<device>:<inode>` of a file, as systemd puts it in `JOURNAL_STREAM`.
fn journal_stream_of(path: &Path) -> String {
    let meta = std::fs::metadata(path).expect("log file metadata");
    format!("{}:{}", meta.dev(), meta.ino())
}

async fn run_until_healthy(installed: &Installed, env: &[(&str, String)]) -> String {
    let log = installed.dir.path().join("daemon.out");
    File::create(&log).expect("log file");
    let mut env = env.to_vec();
    if env.iter().any(|(k, _)| *k == "JOURNAL_STREAM") {
        env.retain(|(k, _)| *k != "JOURNAL_STREAM");
        env.push(("JOURNAL_STREAM", journal_stream_of(&log)));
    }
    let mut child = spawn(&installed.config, &log, &env);
    let http = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + omni_testkit::PATIENCE;
    loop {
        let healthy = http
            .get(format!("{}/healthz", installed.base))
            .send()
            .await
            .is_ok_and(|a| a.status().is_success());
        // Healthy comes a moment before the start-up's last line is written.
        let started = std::fs::read_to_string(&log).is_ok_and(|l| l.contains("gateway started"));
        if healthy && started {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the daemon did not become healthy; its output:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    child.kill().expect("SIGKILL delivered");
    child.wait().expect("reaped");
    std::fs::read_to_string(&log).expect("log readable")
}

async fn installed() -> (Chat, Facebook, Installed) {
    let chat = Chat::start().await;
    let fb = Facebook::start().await;
    let installed = Installed::new(&chat, &fb, PageSetup::default()).await;
    (chat, fb, installed)
}

#[tokio::test]
async fn output_to_a_file_has_no_escape_codes() {
    let (_chat, _fb, installed) = installed().await;
    let log = run_until_healthy(&installed, &[]).await;
    assert!(log.contains("gateway started"), "{log}");
    assert!(
        !log.contains('\x1b'),
        "escape codes in a file's log:\n{log:?}"
    );
    // A file keeps its timestamps: nothing else would date the lines.
    let stamped = regex::Regex::new(r"^\d{4}-\d{2}-\d{2}T").expect("literal regex");
    assert!(log.lines().all(|l| stamped.is_match(l)), "{log}");
}

#[tokio::test]
async fn under_the_journal_lines_carry_priorities_and_no_timestamps() {
    let (_chat, _fb, installed) = installed().await;
    let log = run_until_healthy(&installed, &[("JOURNAL_STREAM", String::new())]).await;
    assert!(!log.contains('\x1b'), "{log:?}");
    let tagged = regex::Regex::new(r"^<[0-7]>").expect("literal regex");
    let dated = regex::Regex::new(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}").expect("literal regex");
    assert!(!log.is_empty());
    for line in log.lines() {
        assert!(tagged.is_match(line), "no priority: {line:?}");
        assert!(!dated.is_match(line), "a timestamp: {line:?}");
    }
    assert!(
        log.lines()
            .any(|l| l.starts_with("<6>") && l.contains("gateway started")),
        "{log}"
    );
}

/// The shipped example, run as the README's production command would: refused before anything
/// starts, one line per placeholder (as `<3>` errors in the journal), exit status 78.
#[test]
fn the_example_config_is_refused_with_one_line_per_placeholder() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("bot.toml");
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("out");
    File::create(&log).expect("log file");
    let stream = journal_stream_of(&log);
    for journal in [false, true] {
        let env = if journal {
            vec![("JOURNAL_STREAM", stream.clone())]
        } else {
            Vec::new()
        };
        let status = spawn(&example, &log, &env).wait().expect("exits");
        let out = std::fs::read_to_string(&log).expect("log readable");
        assert_eq!(status.code(), Some(78), "EX_CONFIG expected:\n{out}");
        let lines: Vec<&str> = out.lines().collect();
        let keys = [
            "[rocketchat].password",
            "[facebook].app_secret",
            "[facebook].verify_token",
            "[facebook].app_id",
        ];
        assert_eq!(lines.len(), keys.len() + 1, "{out}");
        let prefix = if journal {
            "<3>omni-gateway: "
        } else {
            "omni-gateway: "
        };
        for (line, key) in lines.iter().zip(keys) {
            assert!(
                line.starts_with(&format!(
                    "{prefix}{}: {key}: still has the example value",
                    example.display()
                )),
                "{line}"
            );
        }
        assert!(lines[4].contains("refusing to start"), "{out}");
        assert!(!out.contains("gateway started"), "{out}");
    }
}

#[test]
fn version_names_the_commit() {
    let output = Command::new(BINARY)
        .arg("--version")
        .output()
        .expect("runs");
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    let expected = regex::Regex::new(&format!(
        r"^omni-gateway {} \(commit ([0-9a-f]{{7,}}|unknown)\)\n$",
        regex::escape(env!("CARGO_PKG_VERSION"))
    ))
    .expect("regex");
    assert!(expected.is_match(&text), "{text:?}");
}

/// The README's first command is the sandbox tour, which needs nothing but the repository: the
/// binary plays it and exits 0. The production command follows it, then the test command.
#[test]
fn the_readme_starts_with_the_sandbox_tour_and_it_passes() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let block = readme
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a sh block");
    let commands: Vec<&str> = block
        .lines()
        .map(|l| l.split('#').next().unwrap_or("").trim())
        .collect();
    assert_eq!(
        commands,
        [
            "cargo run --locked -- sandbox",
            "cargo run --locked -- run --config bot.toml",
            "bash .ci/run"
        ],
        "{block}"
    );
    assert!(
        readme.lines().take(30).any(|l| l.contains("sandbox")),
        "the sandbox is named in the first 30 lines"
    );
    let output = Command::new(BINARY)
        .arg("sandbox")
        .env_remove("RUST_LOG")
        .output()
        .expect("runs");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.lines().count() >= 16,
        "the tour, one line per hop:\n{shown}"
    );
}
