//! `dispatch`: one binary, a subcommand per service and a few admin tools.
//! The services are library crates; this file only parses arguments.

mod bench;

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use dispatch_infra::config::{ProviderKind, ProviderSettings};
use dispatch_infra::{Config, Connections};
use dispatch_model::Channel;
use tokio_util::sync::CancellationToken;

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
    /// The HTTP API: Messages, Dispatch and Applications, and provider
    /// callbacks.
    Ingest,
    /// Sends messages to providers for one or more channels.
    Sender {
        /// Channels to send on (repeat or separate with commas); all five
        /// when omitted.
        #[arg(long = "channel", value_delimiter = ',', value_parser = parse_channel)]
        channels: Vec<Channel>,
    },
    /// Fires deadlines and other delayed work from Redis.
    Timer,
    /// Delivers webhooks: signed, retried, dead-lettered.
    Notifier,
    /// A fake provider for every channel, for development, tests and demos.
    ProviderSim,
    /// Every service in one process (small installations, local runs):
    /// ingest, senders for all channels, timer, notifier. The
    /// simulator runs separately (`dispatch provider-sim`).
    All,
    /// Exit 0 if the service answers ready: a container health check.
    Healthcheck {
        /// What to ask; by default `http://{admin_addr}/readyz`.
        #[arg(long)]
        url: Option<String>,
    },
    /// Which provider serves a channel for an account or application.
    Provider {
        #[command(subcommand)]
        command: ProviderCommand,
    },
    /// Who receives inbound messages to a number on the shared providers
    /// (the configuration's and the simulator).
    Number {
        #[command(subcommand)]
        command: NumberCommand,
    },
    /// Manage accounts.
    Account {
        #[command(subcommand)]
        command: AccountCommand,
    },
    /// Declare the RabbitMQ exchange and queues, then exit.
    Topology,
    /// Drive `POST /v0.1/dispatch` against a running system and print
    /// accepted requests per second and latency percentiles, beside the
    /// broker's raw publish rate; with `--completed`, whole workflows and
    /// what each costs (CPU per process, persistent messages).
    Bench(bench::Args),
    /// Measure the broker alone: persistent, confirmed, mandatory
    /// publishes over one connection, pipelined as ingest publishes, to a
    /// queue of the run's own; prints publishes per second and confirm
    /// latency.
    BenchBroker(bench::broker::Args),
    /// Measure timer lateness with many pending deadlines (runs a timer
    /// in-process against the configured RabbitMQ and Redis, under a
    /// private prefix).
    BenchTimer(dispatch_timer::bench::BenchArgs),
    /// Measure webhook deliveries per second to a local receiver (runs a
    /// notifier in-process under a private prefix).
    BenchWebhooks(dispatch_notifier::bench::BenchArgs),
    /// Measure how long each console page takes with many workflows
    /// stored (runs an ingest in-process against the configured Redis,
    /// under a private prefix); prints p50/p99 per page.
    BenchConsole(bench::console::Args),
}

#[derive(Subcommand)]
enum AccountCommand {
    /// Create an account and print its credentials as JSON.
    Create,
    /// Set an account's own request rate, which replaces
    /// `account_rate_per_sec` and `account_rate_burst` for it (on every
    /// ingest within seconds).
    Rate {
        /// The account's api key.
        #[arg(long)]
        account: String,
        /// Requests per second; 0 for no limit.
        #[arg(long, required_unless_present = "default")]
        per_sec: Option<u32>,
        /// Requests at once above the rate; 0 for one second's worth.
        #[arg(long, default_value_t = 0, conflicts_with = "default")]
        burst: u32,
        /// Forget the account's own rate: the configuration's applies.
        #[arg(long, conflicts_with = "per_sec")]
        default: bool,
    },
}

#[derive(Subcommand)]
enum NumberCommand {
    /// Give a number to an account, or one of its applications: users'
    /// messages to it through a shared provider go there, and to nobody
    /// else.
    Assign {
        #[arg(long, value_parser = parse_channel)]
        channel: Channel,
        /// Our number (or Messenger page id) as users write to it.
        #[arg(long)]
        number: String,
        /// The account's api key.
        #[arg(long)]
        account: String,
        /// One of the account's applications, instead of the account.
        #[arg(long)]
        application: Option<uuid::Uuid>,
    },
    /// Take a number back: users' messages to it through a shared provider
    /// go to nobody.
    Release {
        #[arg(long, value_parser = parse_channel)]
        channel: Channel,
        #[arg(long)]
        number: String,
    },
}

#[derive(Subcommand)]
enum ProviderCommand {
    /// Route a channel of an account, or of one of its applications, to a
    /// provider; credentials are stored encrypted with `credentials_key`.
    Set {
        /// The account's api key.
        #[arg(long)]
        account: String,
        /// One of the account's applications, instead of the account.
        #[arg(long)]
        application: Option<uuid::Uuid>,
        #[arg(long, value_parser = parse_channel)]
        channel: Channel,
        /// simulator, vonage, twilio or meta.
        #[arg(long, value_parser = parse_kind)]
        kind: ProviderKind,
        /// The provider's base URL; its public API by default.
        #[arg(long, default_value = "")]
        url: String,
        /// The simulator's bearer token.
        #[arg(long, env = "DISPATCH_PROVIDER_SECRET", default_value = "")]
        secret: String,
        /// A credential, `name=value` (repeat for each; docs/providers.md
        /// lists each provider's).
        #[arg(long = "credential", value_parser = parse_pair)]
        credentials: Vec<(String, String)>,
        /// A template body, `name=text with {{1}}`.
        #[arg(long = "template", value_parser = parse_pair)]
        templates: Vec<(String, String)>,
    },
    /// Remove a channel's provider of an account or application, so the
    /// next level (account, then configuration) applies.
    Clear {
        #[arg(long)]
        account: String,
        #[arg(long)]
        application: Option<uuid::Uuid>,
        #[arg(long, value_parser = parse_channel)]
        channel: Channel,
    },
}

fn parse_kind(value: &str) -> Result<ProviderKind, String> {
    ProviderKind::parse(value).ok_or_else(|| "one of simulator, vonage, twilio, meta".to_owned())
}

fn parse_pair(value: &str) -> Result<(String, String), String> {
    value
        .split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| "must be name=value".to_owned())
}

fn parse_channel(value: &str) -> Result<Channel, String> {
    Channel::ALL
        .into_iter()
        .find(|c| c.as_str() == value)
        .ok_or_else(|| {
            let names: Vec<&str> = Channel::ALL.iter().map(|c| c.as_str()).collect();
            format!("not a channel; one of {}", names.join(", "))
        })
}

/// Runs a service with telemetry until SIGTERM or Ctrl-C. On the signal
/// the service stops taking work and gets `shutdown_grace_ms` (plus a
/// moment to hand back what is left) before the process exits anyway.
async fn serve<F, Fut>(name: &'static str, config: &Config, service: F) -> anyhow::Result<()>
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let telemetry = dispatch_infra::telemetry::init(name);
    let shutdown = dispatch_infra::shutdown::on_signal();
    let limit = config.shutdown_grace() + HAND_BACK;
    let overdue = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(limit).await;
        }
    };
    let result = tokio::select! {
        result = service(shutdown) => result,
        () = overdue => {
            tracing::warn!(
                grace_ms = limit.as_millis() as u64,
                "work still running past the shutdown grace period; exiting: the broker \
                 redelivers what was not acknowledged"
            );
            Ok(())
        }
    };
    if let Err(e) = &result {
        tracing::error!(error = %e, "{name} stopped");
    } else {
        tracing::info!("{name} stopped");
    }
    telemetry.shutdown();
    result
}

/// Beyond the grace period: time to close channels (handing unacknowledged
/// deliveries back); flushing telemetry then takes at most 1 s more.
const HAND_BACK: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs a service on the process's connections, with the admin endpoints
/// (`/healthz`, `/readyz` on `admin_addr`) beside it.
async fn serve_with_admin<F, Fut>(
    name: &'static str,
    config: Config,
    service: F,
) -> anyhow::Result<()>
where
    F: FnOnce(Config, Connections, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let grace = config.clone();
    serve(name, &grace, |shutdown| async move {
        config.validate()?;
        // A Redis of the other kind than `redis_cluster` says stops
        // start-up here, with a message that says which; one not
        // answering yet does not.
        dispatch_infra::redis::check_mode(&config, std::time::Duration::from_secs(2)).await?;
        let connections = Connections::open(&config, name)?;
        dispatch_infra::admin::spawn(config.admin_addr, connections.clone(), shutdown.clone())
            .await?;
        service(config, connections, shutdown).await
    })
    .await
}

/// Exits 0 when `url` (by default this configuration's admin `/readyz`)
/// answers 2xx: a container health check.
async fn healthcheck(config: &Config, url: Option<String>) -> anyhow::Result<()> {
    let url = url.unwrap_or_else(|| {
        let mut addr = config.admin_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
        }
        format!("http://{addr}/readyz")
    });
    let response = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(3))
        .build()?
        .get(&url)
        .send()
        .await
        .with_context(|| format!("no answer from {url}"))?;
    let status = response.status();
    let body = response.text().await.unwrap_or_default();
    anyhow::ensure!(status.is_success(), "{url} answered {status}: {body}");
    println!("{body}");
    Ok(())
}

/// Every service on one runtime, on one pair of connections; when one
/// stops with an error, the others are stopped too.
async fn all(config: Config, c: Connections, shutdown: CancellationToken) -> anyhow::Result<()> {
    let mut services = tokio::task::JoinSet::new();
    services.spawn(dispatch_ingest::run_with(
        config.clone(),
        c.clone(),
        shutdown.clone(),
    ));
    services.spawn(dispatch_sender::run_with(
        config.clone(),
        Channel::ALL.to_vec(),
        c.clone(),
        shutdown.clone(),
    ));
    services.spawn(dispatch_timer::run_with(
        config.clone(),
        c.clone(),
        shutdown.clone(),
    ));
    services.spawn(dispatch_notifier::run_with(config, c, shutdown.clone()));
    let mut result = Ok(());
    while let Some(done) = services.join_next().await {
        let outcome = done.map_err(anyhow::Error::from).and_then(|r| r);
        if let Err(e) = outcome {
            tracing::error!(error = %e, "a service stopped; stopping the others");
            shutdown.cancel();
            if result.is_ok() {
                result = Err(e);
            }
        }
    }
    result
}

async fn number(config: &Config, command: NumberCommand) -> anyhow::Result<()> {
    let redis = dispatch_infra::redis::connect(config)?;
    let keys = dispatch_infra::redis::Keys::for_config(config);
    let (channel, number, owner) = match command {
        NumberCommand::Assign {
            channel,
            number,
            account,
            application,
        } => (
            channel,
            number,
            Some(dispatch_infra::providers::Owner {
                account,
                application_id: application,
            }),
        ),
        NumberCommand::Release { channel, number } => (channel, number, None),
    };
    dispatch_infra::providers::assign_number(&redis, &keys, channel, &number, owner.as_ref())
        .await?;
    match owner {
        Some(owner) => println!("{channel} {number} now belongs to {}", owner.scope()),
        None => println!("{channel} {number} belongs to nobody"),
    }
    Ok(())
}

async fn provider(config: &Config, command: ProviderCommand) -> anyhow::Result<()> {
    let redis = dispatch_infra::redis::connect(config)?;
    let keys = dispatch_infra::redis::Keys::for_config(config);
    let key = dispatch_infra::crypto::CredentialsKey::parse(&config.credentials_key)
        .map_err(|e| anyhow::anyhow!("credentials_key: {e}"))?;
    let store = dispatch_infra::providers::ProviderStore::new(redis, keys, key);
    match command {
        ProviderCommand::Set {
            account,
            application,
            channel,
            kind,
            url,
            secret,
            credentials,
            templates,
        } => {
            let settings = ProviderSettings {
                kind,
                url,
                secret,
                credentials: credentials.into_iter().collect(),
                templates: templates.into_iter().collect(),
                route: String::new(),
            };
            let adapters = dispatch_providers::Providers::new(std::time::Duration::from_secs(5))?;
            adapters
                .get(kind)
                .check(channel, &settings)
                .map_err(|why| anyhow::anyhow!("{} on {channel}: {why}", kind.as_str()))?;
            let owner = dispatch_infra::providers::Owner {
                account,
                application_id: application,
            };
            let stored = store.put(&owner, channel, settings).await?;
            let shown =
                dispatch_infra::providers::Redacted::new(channel, &stored, &config.callback_base());
            println!("{}", serde_json::to_string_pretty(&shown)?);
        }
        ProviderCommand::Clear {
            account,
            application,
            channel,
        } => {
            let owner = dispatch_infra::providers::Owner {
                account,
                application_id: application,
            };
            if store.delete(&owner, channel).await? {
                println!(
                    "{channel} of {} now uses the next level's provider",
                    owner.scope()
                );
            } else {
                println!("{channel} of {} had no provider of its own", owner.scope());
            }
        }
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let result = runtime.block_on(run(cli));
    // Tasks still running (detached handlers past the grace period) are
    // dropped, not waited for: the broker redelivers their work.
    runtime.shutdown_timeout(std::time::Duration::from_millis(500));
    result
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Ingest => {
            serve_with_admin("ingest", config, |config, c, s| {
                dispatch_ingest::run_with(config, c, s)
            })
            .await
        }
        Command::Sender { mut channels } => {
            if channels.is_empty() {
                channels = Channel::ALL.to_vec();
            }
            serve_with_admin("sender", config, |config, c, s| {
                dispatch_sender::run_with(config, channels, c, s)
            })
            .await
        }
        Command::Timer => serve_with_admin("timer", config, dispatch_timer::run_with).await,
        Command::Notifier => {
            serve_with_admin("notifier", config, dispatch_notifier::run_with).await
        }
        Command::ProviderSim => {
            let settings = config.clone();
            serve("provider-sim", &settings, |s| {
                dispatch_provider_sim::run(config, s)
            })
            .await
        }
        Command::All => serve_with_admin("all", config, all).await,
        Command::Healthcheck { url } => healthcheck(&config, url).await,
        Command::Provider { command } => provider(&config, command).await,
        Command::Number { command } => number(&config, command).await,
        Command::Account {
            command: AccountCommand::Create,
        } => {
            let credentials = dispatch_ingest::accounts::create_in(&config).await?;
            println!("{}", serde_json::to_string(&credentials)?);
            Ok(())
        }
        Command::Account {
            command:
                AccountCommand::Rate {
                    account,
                    per_sec,
                    burst,
                    default,
                },
        } => {
            let rate = match per_sec {
                Some(per_sec) if !default => Some(dispatch_ingest::rate::Rate { per_sec, burst }),
                _ => None,
            };
            let mut redis = dispatch_infra::redis::connect(&config)?;
            let keys = dispatch_infra::redis::Keys::for_config(&config);
            let found =
                dispatch_ingest::accounts::set_rate(&mut redis, &keys, &account, rate).await?;
            anyhow::ensure!(found, "no account {account}");
            Ok(())
        }
        Command::Topology => {
            let shutdown = tokio_util::sync::CancellationToken::new();
            let broker =
                dispatch_infra::broker::Broker::start(&config, "topology", shutdown.clone());
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
        Command::BenchBroker(args) => bench::broker::run(args, &config).await,
        Command::BenchTimer(args) => dispatch_timer::bench::run_bench(&config, args).await,
        Command::BenchConsole(args) => bench::console::run(args, &config).await,
        Command::BenchWebhooks(args) => {
            // A timer brings back the webhooks that waited for a free slot.
            let config = dispatch_notifier::bench::private_config(&config);
            let timer = tokio_util::sync::CancellationToken::new();
            tokio::spawn(dispatch_timer::run(config.clone(), timer.clone()));
            let result = dispatch_notifier::bench::run_bench(config, args).await;
            timer.cancel();
            result
        }
    }
}
