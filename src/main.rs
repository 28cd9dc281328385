//! burrow's executable: parses the command line, loads the configuration, sets up logging and
//! hands over to the library's `app` (the tunnel), `check` or `demo`.

#![forbid(unsafe_code)]

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use burrow::events::{ErrorCode, Fatal, Format, Outcome, Reporter};
use burrow::{app, check, config, demo, frpc};

/// Puts your app's local web stack on a public URL through an frp server (frps).
#[derive(Debug, Parser)]
#[command(name = "burrow", version, about, long_about = None)]
struct Cli {
    /// An frpc TOML configuration file (overrides BURROW_CONFIG).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
    /// Write events on stdout as JSON lines (the default).
    #[arg(long, global = true, overrides_with = "no_json")]
    json: bool,
    /// Write events on stdout as human-readable lines instead of JSON.
    #[arg(long, global = true)]
    no_json: bool,
    /// How to serve tunnels: auto (native, falling back to frpc), native, or frpc.
    #[arg(long, value_name = "MODE", global = true)]
    mode: Option<String>,
    /// Use the bundled frpc (same as --mode frpc).
    #[arg(long, global = true)]
    fallback: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print burrow's version and the frp protocol versions it speaks.
    Version,
    /// Check the configuration: resolve it, find frpc, reach the API or frps; exit 0 only when
    /// everything checked would work.
    Check,
    /// Run everything on loopback — real frps, a sample app, burrow — and fetch the public URL.
    Demo {
        /// Directory holding frps 0.65.0 (default: the cache of resources/fetch-frp.sh).
        #[arg(long, value_name = "DIR")]
        frp_dir: Option<PathBuf>,
    },
}

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    let format = if cli.no_json && !cli.json { Format::Human } else { Format::Json };

    match cli.command {
        Some(Command::Version) => {
            println!("burrow {}", env!("CARGO_PKG_VERSION"));
            println!("frp wire protocol: v1 (frps 0.52 – 0.70) and v2 (frps 0.69 – 0.70), tested against each");
            println!("transports: tcp, tls, websocket, wss, yamux (tcp_mux); HTTP CONNECT and SOCKS5 proxies to frps");
            let explicit = std::env::var_os("BURROW_FRPC_PATH").map(PathBuf::from);
            match frpc::locate::resolve(explicit.as_deref()) {
                Ok(p) => {
                    let v = runtime().block_on(frpc::locate::version(&p));
                    println!("bundled frpc: {} ({})", v.as_deref().unwrap_or("unknown version"), p.display());
                }
                Err(_) => println!(
                    "bundled frpc: not found (the fallback needs resources/bin/<os>-<arch>/frpc or BURROW_FRPC_PATH)"
                ),
            }
            return;
        }
        Some(Command::Demo { frp_dir }) => {
            init_tracing("info");
            let rt = runtime();
            let code = rt.block_on(demo::run(frp_dir));
            std::process::exit(code);
        }
        Some(Command::Check) | None => {}
    }

    let reporter = Reporter::stdout(format);
    let env = config::process_env();
    let mode = match (&cli.mode, cli.fallback) {
        (Some(m), _) => match config::Mode::parse("--mode", m) {
            Ok(m) => Some(m),
            Err(e) => {
                let fatal = Fatal::new(ErrorCode::ConfigInvalid, e.to_string(), "use --mode auto, native or frpc");
                std::process::exit(reporter.exit(Outcome::Fatal(fatal)));
            }
        },
        (None, true) => Some(config::Mode::Frpc),
        (None, false) => None,
    };
    let overrides = config::Overrides { config_file: cli.config, mode };
    let config = match config::load(&env, &overrides) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Some(Command::Check)) => {
            // `check` reports it as any failed check, instead of the event stream.
            std::process::exit(check::invalid(&e, cli.json));
        }
        Err(e) => {
            let fatal = Fatal::new(ErrorCode::ConfigInvalid, e.to_string(), e.hint());
            std::process::exit(reporter.exit(Outcome::Fatal(fatal)));
        }
    };
    init_tracing(&config.log_filter);
    let rt = runtime();
    if matches!(cli.command, Some(Command::Check)) {
        let code = rt.block_on(check::run(&config, cli.json));
        std::process::exit(code);
    }
    let outcome = rt.block_on(app::run(config, reporter.clone()));
    // `stopped` is written (and flushed) by the one exit path. Exit before the runtime is dropped: dropping it would wait for the blocking stdin reader,
    // which only returns when the host writes or closes stdin.
    std::process::exit(reporter.exit(outcome));
}

fn runtime() -> tokio::runtime::Runtime {
    // One thread for the tunnel client: its hot path is one yamux connection whose streams wake
    // each other constantly, and across threads every wake is a futex call and a context switch.
    // The reverse proxy runs one single-threaded runtime per core of its own (proxy::spawn_workers).
    match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            burrow::say!("burrow: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    }
}

fn init_tracing(filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::filter::{LevelFilter, Targets};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Validated by config::load; `Targets` needs no regex engine, unlike `EnvFilter`.
    let targets: Targets = filter.parse().unwrap_or_else(|_| Targets::new().with_default(LevelFilter::INFO));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    tracing_subscriber::registry().with(fmt).with(targets).init();
}
