//! The bakery binary: parse the command line, set up logging, run, map errors to exit codes.

use clap::Parser;
use tracing_subscriber::EnvFilter;

use bakery::cli::{run, Cli, CliError, LogFormat};

fn main() {
    let cli = Cli::parse();
    init_tracing(&cli);
    match run(&cli) {
        Ok(()) => {}
        Err(e) => {
            match &e {
                CliError::Invalid(d) if d.is_empty() => {}
                CliError::Invalid(d) => bakery::errln!("{d}"),
                CliError::Failed(m) => bakery::errln!("error: {m}"),
                CliError::Exit(_, m) if m.is_empty() => {}
                CliError::Exit(_, m) => bakery::errln!("error: {m}"),
            }
            std::process::exit(e.exit_code());
        }
    }
}

fn init_tracing(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_env("BAKERY_LOG")
        .unwrap_or_else(|_| EnvFilter::new(format!("bakery={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.event_format(bakery::cli::log::JsonLog).init(),
        LogFormat::Text => builder.init(),
    }
}
