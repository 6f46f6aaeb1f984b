//! `omni-gateway` command line (DESIGN.md §3): `run` (the default), `check`, `sandbox`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use omni_gateway::config::Config;
use omni_gateway::{daemon, tls};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    tls::install_crypto_provider();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("omni-gateway: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command.unwrap_or(Action::Run) {
            Action::Run => {
                let config = Config::load(&cli.config)?;
                for warning in config.placeholder_warnings() {
                    tracing::warn!("{warning}");
                }
                daemon::run(config).await
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

/// `RUST_LOG` decides the levels (default `info`); `--log-format json` for log collectors.
fn init_logging(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
