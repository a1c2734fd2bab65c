//! `switchboard`: start one node with the configuration from flags, the environment and an
//! optional config file.

use std::net::TcpListener;
use std::process::ExitCode;

use switchboard::Config;
use switchboard::config::{ConfigError, Loaded, Source};
use switchboard::traces::Exporter;
use tracing::{error, info, warn};

/// jemalloc instead of glibc malloc (see server/Cargo.toml for why).
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[actix_web::main]
async fn main() -> ExitCode {
    let Loaded {
        mut config,
        effective,
    } = match Config::load() {
        Ok(loaded) => loaded,
        // clap prints usage errors, `--help` and `--version` itself, with its exit codes.
        Err(ConfigError::Args(err)) => err.exit(),
        // Logging is not set up yet (its filter is a setting): plain text on stderr.
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if config.print_config {
        print!("{effective}");
        return ExitCode::SUCCESS;
    }
    if let Err(err) = config.read_secret_file() {
        eprintln!("error: {err}");
        return ExitCode::from(2);
    }
    if let Some(user) = &config.mint_token {
        return mint_token(&config, user);
    }
    // Traces are off (and no span is built) unless an OTLP endpoint is set.
    let exporter = config
        .otlp_endpoint()
        .map(|endpoint| Exporter::start(endpoint, config.trace_sample_ratio, &config.node_id()));
    let (exporter, exporter_failed) = match exporter {
        Some(Ok(exporter)) => (Some(exporter), None),
        Some(Err(err)) => (None, Some(err)),
        None => (None, None),
    };
    switchboard::logging::init(&config.log, exporter.as_ref().map(|e| e.tracer.clone()));
    if let Some(err) = exporter_failed {
        error!(%err, "refusing to start: cannot set up the trace exporter");
        return ExitCode::FAILURE;
    }
    let code = serve(config, effective).await;
    if let Some(exporter) = exporter {
        // The last spans go out before exit; shutting down blocks, so off the async thread.
        let _ = actix_web::rt::task::spawn_blocking(move || exporter.shutdown()).await;
    }
    code
}

/// Everything after logging is set up: checks, then the node until it stops.
async fn serve(config: Config, effective: switchboard::config::Effective) -> ExitCode {
    #[cfg(feature = "fault-drop-acked")]
    warn!("FAULT-INJECTION BUILD: one acknowledged message:send in 1000 is not stored");
    // Purge freed pages in the background (jemalloc's decay, ~10 s): without it memory freed
    // after a burst of connections is only returned when something allocates again.
    if let Err(err) = tikv_jemalloc_ctl::background_thread::write(true) {
        warn!(%err, "jemalloc background purging not enabled");
    }
    raise_open_file_limit();
    if effective.source("jwt-secret") == Some(Source::Flag) {
        warn!(
            "the JWT secret was given as a command-line flag, which any local user can read in \
             the process list: use SWITCHBOARD_JWT_SECRET or --jwt-secret-file"
        );
    }
    // Settings that cannot work are refused before anything listens.
    if let Err(err) = config.hooks().and(config.webhooks()) {
        error!(%err, "invalid settings");
        return ExitCode::FAILURE;
    }
    if let Err(problems) = config.validate() {
        for problem in &problems {
            error!(%problem, "refusing to start: invalid settings");
        }
        return ExitCode::FAILURE;
    }
    if config.retention_sweep {
        return retention_sweep(&config).await;
    }
    if let Err(err) = switchboard::check_node_id(&config).await {
        error!(%err, "refusing to start");
        return ExitCode::FAILURE;
    }
    let Some(listener) = bind(&config.listen, "listening") else {
        return ExitCode::FAILURE;
    };
    let admin = match &config.admin_listen {
        Some(addr) => match bind(addr, "admin listening") {
            Some(listener) => Some(listener),
            None => return ExitCode::FAILURE,
        },
        None => None,
    };
    match switchboard::run(config, listener, admin, shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            error!(err = %err, "node failed");
            ExitCode::FAILURE
        }
    }
}

/// Bind `addr` and log `message` with the bound address (tests read the port from it).
fn bind(addr: &str, message: &str) -> Option<TcpListener> {
    let listener = match TcpListener::bind(addr) {
        Ok(listener) => listener,
        Err(err) => {
            error!(listen = %addr, %err, "cannot bind the listener");
            return None;
        }
    };
    match listener.local_addr() {
        Ok(bound) => info!(addr = %bound, "{message}"),
        Err(err) => warn!(%err, "{message} on an unknown address"),
    }
    Some(listener)
}

/// Resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        warn!("cannot listen for signals; the node stops only when killed");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = int.recv() => info!("SIGINT received"),
    }
}

/// `--retention-sweep`: delete rows past their retention once and exit.
async fn retention_sweep(config: &Config) -> ExitCode {
    use switchboard_actors::journal::Journal;
    use switchboard_actors::ports::journal::RetentionSweep;
    let journal_config = config.journal();
    let journal = match Journal::connect(&config.database_url, journal_config.clone()).await {
        Ok(journal) => actix::Actor::start(journal),
        Err(err) => {
            error!(err = %err, "cannot open the database");
            return ExitCode::FAILURE;
        }
    };
    let sweep = RetentionSweep {
        connections_older_than: journal_config.retention_connections,
        presence_older_than: journal_config.retention_presence,
        messages_older_than: journal_config.retention_messages,
    };
    match journal.send(sweep).await {
        Ok(Ok((connections, presence, messages))) => {
            info!(connections, presence, messages, "retention sweep done");
            ExitCode::SUCCESS
        }
        other => {
            error!(result = ?other.map(|r| r.map(|_| ())), "retention sweep failed");
            ExitCode::FAILURE
        }
    }
}

/// `--mint-token USER`: print a token for USER and exit.
fn mint_token(config: &Config, user: &str) -> ExitCode {
    let Some(secret) = config.jwt_secret.as_deref().filter(|s| !s.is_empty()) else {
        eprintln!(
            "--mint-token needs the HS256 secret: set SWITCHBOARD_JWT_SECRET or --jwt-secret"
        );
        return ExitCode::FAILURE;
    };
    println!(
        "{}",
        switchboard_actors::auth::mint_hs256(secret.as_bytes(), user, 24 * 3600, &[])
    );
    ExitCode::SUCCESS
}

/// Each socket is a file: raise the soft limit to the hard one and say what that allows.
fn raise_open_file_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => info!(
            open_files = limit,
            "open-file limit raised; about this many sockets fit on the node"
        ),
        Err(err) => warn!(%err, "could not raise the open-file limit"),
    }
}
