//! The sslsniff command: parse the flags, install the signals that stop it, run.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::error::ErrorKind;
use clap::Parser;

use sslsniff::cli::Cli;
use sslsniff::{diag, tracer};

/// Signals that end the capture cleanly: Ctrl-C, `kill`, a closed terminal or ssh
/// session, Ctrl-\. Installed before any file is read, so none of them can find the
/// tool half-started without a handler.
const STOP_SIGNALS: [i32; 4] = [
    signal_hook::consts::SIGINT,
    signal_hook::consts::SIGTERM,
    signal_hook::consts::SIGHUP,
    signal_hook::consts::SIGQUIT,
];

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // clap's own message spans several lines; the first one says what is wrong.
            let msg = e.render().to_string();
            let first = msg.lines().next().unwrap_or("invalid arguments");
            eprintln!(
                "sslsniff: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            return ExitCode::from(2);
        }
    };
    diag::set_status(cli.status);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            diag::error(&e);
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    for signal in STOP_SIGNALS {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install signal handlers")?;
    }
    let cfg = cli.config()?;
    if let Some(summary) = tracer::run(&cfg, &stop)? {
        if !cfg.check_kernel {
            diag::summary(&summary);
        }
    }
    Ok(())
}
