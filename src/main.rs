//! `dispatch`: one binary, a subcommand per service and a few admin tools.
//! The services are library crates; this file only parses arguments.

mod bench;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dispatch_infra::Config;

#[derive(Parser)]
#[command(
    name = "dispatch",
    version,
    about = "Multi-channel messaging with failover"
)]
struct Cli {
    /// A TOML configuration file; `DISPATCH_*` environment variables
    /// override it (see docs/configuration.md).
    #[arg(long, global = true, env = "DISPATCH_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The HTTP API: Messages, Dispatch and Applications.
    Ingest,
    /// Every service in one process (small installations, local runs).
    All,
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Declare the RabbitMQ exchange and queues, then exit.
    Topology,
    /// Drive `POST /v0.1/dispatch` against a running system and print
    /// accepted requests per second and latency percentiles.
    Bench(bench::Args),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account and print its credentials as JSON.
    Create,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Ingest | Command::All => {
            let telemetry = dispatch_infra::telemetry::init("dispatch");
            let shutdown = dispatch_infra::shutdown::on_signal();
            let result = dispatch_ingest::run(config, shutdown).await;
            telemetry.shutdown();
            result
        }
        Command::Account {
            command: AccountCommand::Create,
        } => {
            let credentials = dispatch_ingest::accounts::create_in(&config).await?;
            println!("{}", serde_json::to_string(&credentials)?);
            Ok(())
        }
        Command::Topology => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let broker = dispatch_infra::broker::Broker::start(&config, shutdown.clone());
            let ready = broker.wait_ready(std::time::Duration::from_secs(30)).await;
            shutdown.cancel();
            anyhow::ensure!(ready, "could not reach RabbitMQ at amqp_url");
            println!(
                "topology declared on exchange {}",
                broker.topology().exchange
            );
            Ok(())
        }
        Command::Bench(args) => bench::run(args, &config).await,
    }
}
