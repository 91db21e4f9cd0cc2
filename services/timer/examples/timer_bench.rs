//! Timer lateness benchmark; see `dispatch_timer::bench`.
//!
//! `source /tmp/devenv && cargo run --release -p dispatch-timer --example timer_bench -- --help`

use clap::Parser;
use dispatch_timer::bench::{BenchArgs, run_bench};

#[derive(Parser)]
#[command(about = "How late do timer deadlines fire with many pending?")]
struct Cli {
    #[command(flatten)]
    bench: BenchArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let telemetry = dispatch_infra::telemetry::init_with_default_level("timer-bench", "warn");
    let config = dispatch_infra::Config::load(None)?;
    let result = run_bench(&config, cli.bench).await;
    telemetry.shutdown();
    result
}
