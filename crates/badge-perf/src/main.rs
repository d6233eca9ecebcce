//! `badge-perf`: measures badge's hot paths against the limits of the machine, in one run.
//!
//! ```sh
//! cargo build --release -p badge -p badge-perf && target/release/badge-perf [--quick]
//! target/release/badge-perf [--quick] etcd    # creates through badge on etcd vs raw puts
//! target/release/badge-perf [--quick] memory  # the IssuedToken memory row alone
//! ```
//!
//! The load generator is this binary's `load` subcommand, run as a separate process on
//! 127.0.0.1; the HTTP ceiling is its `ceiling` subcommand (the same rustls + hyper stack
//! as badge answering a fixed reply). Results go to `bench-results/latest.{json,md}`.

mod audit;
mod authorization;
mod client;
mod etcd;
mod load;
mod raw;
mod report;
mod revoked;
mod scale;
mod server;
mod storm;
mod tokens;

use std::path::{Path, PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "badge-perf")]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Smaller sizes and shorter runs (about a minute).
    #[arg(long)]
    quick: bool,
    /// The badge binary to measure.
    #[arg(long, default_value = "target/release/badge")]
    badge: PathBuf,
    /// Where results are written.
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Only these sections (by number, comma-separated; the raw limits of section 1 are
    /// always measured, as the others are judged against them).
    #[arg(long, value_delimiter = ',')]
    only: Vec<u32>,
}

#[derive(Subcommand)]
enum Sub {
    /// The load generator.
    Load(Box<load::LoadOptions>),
    /// The HTTP ceiling server.
    Ceiling { dir: PathBuf },
    /// ServiceAccount creates through badge on etcd against raw etcd puts.
    Etcd,
    /// Only the memory each IssuedToken record costs (section 5), printed.
    Memory,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Some(Sub::Load(options)) => runtime.block_on(load::run(*options)),
        Some(Sub::Ceiling { dir }) => runtime.block_on(raw::ceiling(&dir)),
        Some(Sub::Etcd) => runtime.block_on(etcd::bench(cli.quick, &cli.badge, &cli.out)),
        Some(Sub::Memory) => {
            for row in runtime.block_on(scale::memory(&cli.badge, cli.quick))? {
                println!(
                    "| {} | {} | {} | {} |",
                    row.section, row.figure, row.limit, row.goal
                );
            }
            Ok(())
        }
        None => runtime.block_on(bench(cli.quick, &cli.badge, &cli.out, &cli.only)),
    }
}

async fn bench(quick: bool, badge: &Path, out: &Path, only: &[u32]) -> anyhow::Result<()> {
    let seconds = if quick { 1.5 } else { 4.0 };
    let machine = report::machine();
    eprintln!("machine: {machine}");
    let runs = |section: u32| only.is_empty() || only.contains(&section);
    let mut rows = Vec::new();
    let limits = raw::measure(seconds, &mut rows)?;
    if runs(2) || runs(3) || runs(4) {
        rows.extend(tokens::measure(badge, quick, seconds, &limits).await?);
    }
    if runs(5) {
        rows.extend(scale::measure(badge, quick, seconds, &limits).await?);
    }
    if runs(6) {
        rows.push(authorization::measure());
    }
    if runs(7) {
        rows.extend(audit::measure(badge, quick, seconds).await?);
    }
    if runs(8) {
        rows.extend(revoked::measure(badge, seconds).await?);
    }
    if runs(9) {
        rows.extend(storm::measure(badge).await?);
    }
    report::write(out, &machine, quick, &rows)
}
