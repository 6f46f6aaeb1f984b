//! `omni-gateway` command line (`docs/contract.md` §2): `run` (the default), `check`, `sandbox`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use omni_gateway::config::Config;
use omni_gateway::logging::{self, TextStyle};
#[cfg(feature = "sandbox")]
use omni_gateway::sandbox;
use omni_gateway::{check, daemon, tls};

/// The webhook path makes many short-lived allocations across tokio's, the journal's and
/// sled's threads; glibc's allocator spent about a tenth of its CPU on them, and mimalloc
/// serves the same load about a fifth faster (BENCHMARKS.md, "Webhook ingest"). Built without
/// transparent huge pages, which otherwise triple the idle footprint.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// sysexits.h `EX_CONFIG`: the configuration is wrong. The systemd unit lists it in
/// `RestartPreventExitStatus=`, so a wrong file is not restarted in a loop.
const EX_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    version = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("OMNI_GATEWAY_GIT_COMMIT"), ")"),
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
        /// Skip the tour: serve one connected page on this loopback address for a webhook load
        /// generator, until Ctrl-C.
        #[arg(long, value_name = "ADDR", conflicts_with = "interactive")]
        serve: Option<std::net::SocketAddr>,
        /// With --serve: the app secret the load generator signs with.
        #[arg(long, requires = "serve", default_value = "bench-secret")]
        app_secret: String,
        /// With --serve: the connected page's id.
        #[arg(long, requires = "serve", default_value = "1111")]
        page: String,
        /// With --serve: Rocket.Chat answers 503 to everything, so every event is stored and
        /// held (ingest alone).
        #[arg(long, requires = "serve")]
        rocketchat_down: bool,
        /// With --rocketchat-down: Rocket.Chat comes back after this many seconds.
        #[arg(long, value_name = "SECONDS", requires = "rocketchat_down")]
        rocketchat_back_after: Option<u64>,
    },
}

/// What `main` does once the command line and, for `run`, the configuration are read.
enum Job {
    Run(Box<Config>),
    Check,
    #[cfg(feature = "sandbox")]
    Sandbox {
        interactive: bool,
    },
    #[cfg(feature = "sandbox")]
    LoadTarget(sandbox::LoadTarget),
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
    let style = TextStyle::detect();
    logging::init(
        matches!(cli.log_format, LogFormat::Json),
        default_level,
        style,
    );
    tls::install_crypto_provider();
    // `run` refuses a wrong file or a leftover example value before anything starts, one line
    // per problem, with EX_CONFIG.
    let job = match action {
        Action::Run => match Config::load(&cli.config) {
            Ok(config) => match config.reject_placeholders(&cli.config) {
                Ok(()) => Job::Run(Box::new(config)),
                Err(problems) => {
                    for problem in &problems {
                        logging::error_line(style, &problem.to_string());
                    }
                    logging::error_line(
                        style,
                        "refusing to start while the example values above are left; `omni-gateway check` lists what to set",
                    );
                    return ExitCode::from(EX_CONFIG);
                }
            },
            Err(err) => {
                logging::error_line(style, &err.to_string());
                return ExitCode::from(EX_CONFIG);
            }
        },
        Action::Check => Job::Check,
        #[cfg(feature = "sandbox")]
        Action::Sandbox {
            serve: Some(listen),
            app_secret,
            page,
            rocketchat_down,
            rocketchat_back_after,
            ..
        } => Job::LoadTarget(sandbox::LoadTarget {
            listen,
            app_secret,
            page,
            rocketchat_down,
            rocketchat_back_after: rocketchat_back_after.map(std::time::Duration::from_secs),
        }),
        #[cfg(feature = "sandbox")]
        Action::Sandbox { interactive, .. } => Job::Sandbox { interactive },
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            logging::error_line(style, &format!("cannot start the async runtime: {err}"));
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match job {
            Job::Run(config) => daemon::run(*config).await,
            Job::Check => {
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
            Job::Sandbox { interactive } => {
                Ok(sandbox::run(interactive, &mut |line| println!("{line}")).await?)
            }
            #[cfg(feature = "sandbox")]
            Job::LoadTarget(target) => {
                Ok(sandbox::serve_load_target(target, &mut |line| println!("{line}")).await?)
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` prints the whole context chain on one line.
            tracing::error!("{err:#}");
            // The journal already has the tracing line; elsewhere a person may run with the
            // log filtered off, so say it once more plainly.
            if style != TextStyle::Journal {
                eprintln!("omni-gateway: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}
