//! `ferry` — the command line. Argument parsing and telemetry set-up only;
//! the work is in the library crates.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferry_coordinator::cli;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Migrate file shares and SharePoint Server libraries into SharePoint Online."
)]
struct Cli {
    /// Directory holding Ferry's state (jobs, checkpoints, reports, the
    /// encrypted sign-in cache). Copy it, or put it on a share, to resume on
    /// another computer.
    #[arg(long, global = true, env = "FERRY_STATE", default_value = ".ferry")]
    state: PathBuf,
    /// Print results as JSON on stdout (progress and logs stay on stderr).
    #[arg(long, global = true)]
    json: bool,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a job and run it; with --job, run that job's next incremental round.
    Migrate(Box<cli::MigrateArgs>),
    /// Continue a paused job from its last checkpoint.
    Resume(Box<ResumeArgs>),
    /// List jobs, with what is done and what remains of paused ones.
    Status(StatusArgs),
    /// Plan a job without running it: every site and library with its proposed
    /// destination and counts, in a file to review and edit.
    Plan(Box<cli::PlanArgs>),
    /// List the destination tenant's hub sites.
    Hubs(Box<cli::HubsArgs>),
    /// Write a round's reports (SummaryReport, ItemReport, FailureSummary, JSON).
    Report(ReportArgs),
    /// Migrate sample content into an emulated tenant started in-process: the
    /// whole product on one machine, no account needed.
    Demo(cli::DemoArgs),
}

#[derive(Args)]
struct ResumeArgs {
    /// The job to resume (default: the only paused job).
    job: Option<String>,
    #[command(flatten)]
    sign_in: cli::SignInArgs,
    #[command(flatten)]
    run: cli::RunArgs,
}

#[derive(Args)]
struct StatusArgs {
    /// One job's detail (default: all jobs).
    job: Option<String>,
}

#[derive(Args)]
struct ReportArgs {
    job: String,
    /// Round (default: the latest).
    #[arg(long)]
    round: Option<u32>,
    /// Where to write (default: STATE/reports/JOB).
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    ferry_connectors::install_crypto_provider();
    let args = Cli::parse();
    let level = match args.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FERRY_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let out = cli::Output { json: args.json };
    let result = runtime.block_on(async {
        match args.command {
            Command::Migrate(m) => cli::migrate(&args.state, *m, out).await,
            Command::Resume(r) => {
                cli::resume(&args.state, r.job.as_deref(), r.sign_in, r.run, out).await
            }
            Command::Status(s) => cli::status(&args.state, s.job.as_deref(), out).await,
            Command::Report(r) => cli::report(&args.state, &r.job, r.round, r.out, out).await,
            Command::Plan(p) => cli::plan(&args.state, *p, out).await,
            Command::Hubs(h) => cli::hubs(&args.state, *h, out).await,
            Command::Demo(d) => cli::demo(&args.state, d, out).await,
        }
    });
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
