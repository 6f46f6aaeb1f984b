//! `omni-gateway` command line (`docs/contract.md` §2): `run` (the default), `check`, `sandbox`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use omni_gateway::config::Config;
#[cfg(feature = "sandbox")]
use omni_gateway::sandbox;
use omni_gateway::{check, daemon, tls};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    version,
    about = "Connects Facebook Pages (Messenger) to Rocket.Chat Omnichannel"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Action>,
    /// The configuration file.
    #[arg(long, global = true, default_value = "bot.toml")]
    config: PathBuf,
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Subcommand)]
enum Action {
    /// Run the gateway daemon (the default).
    Run,
    /// Diagnose the set-up without starting the daemon: one line per check, non-zero exit if any fails.
    Check,
    /// Play a guided tour of the real gateway against built-in simulators, on loopback.
    #[cfg(feature = "sandbox")]
    Sandbox {
        /// Keep everything running after the tour and print how to poke it.
        #[arg(long)]
        interactive: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let action = cli.command.unwrap_or(Action::Run);
    // `check` and `sandbox` talk to a person on stdout; the daemon's info lines would drown them.
    let default_level = match action {
        Action::Run => "info",
        Action::Check => "warn",
        #[cfg(feature = "sandbox")]
        Action::Sandbox { .. } => "warn",
    };
    init_logging(cli.log_format, default_level);
    tls::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("omni-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match action {
            Action::Run => {
                let config = Config::load(&cli.config)?;
                for warning in config.placeholder_warnings() {
                    tracing::warn!("{warning}");
                }
                daemon::run(config).await
            }
            Action::Check => {
                let report = check::run(&cli.config, &mut |finding| println!("{finding}")).await;
                if report.passed() {
                    Ok(())
                } else {
                    Err(anyhow::anyhow!(
                        "some checks failed; fix the lines marked ✗"
                    ))
                }
            }
            #[cfg(feature = "sandbox")]
            Action::Sandbox { interactive } => {
                Ok(sandbox::run(interactive, &mut |line| println!("{line}")).await?)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            tracing::error!("{err:#}");
            eprintln!("omni-gateway: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// `RUST_LOG` decides the levels (default `default_level`); `--log-format json` for log
/// collectors.
fn init_logging(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
