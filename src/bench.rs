//! `dispatch bench`: a load generator for `POST /v0.1/dispatch`.
//!
//! `--connections` tasks each send one request at a time for `--seconds`,
//! over keep-alive HTTP/1.1 connections (closed loop), or at most `--rate`
//! requests per second in total (open loop). Latency is measured per request
//! from send to full response; the report gives accepted (202) requests per
//! second and p50/p90/p99/max. Without `--api-key`, an account is created
//! in the configured Redis first.
//!
//! Before the HTTP load, the bench measures the broker alone for
//! `--broker-seconds`, as `dispatch bench-broker` does, with as many
//! publishes in flight as there are connections (ingest has at most one
//! per request), on the configured queue type, and then prints ingest's
//! accepted rate as a share of that raw rate: how close ingest comes to
//! what the broker can confirm. Before, not after: after the load a
//! `dispatch all` is still working through the accepted backlog for
//! seconds, and would take the cores the broker needs; the baseline's
//! queue is deleted before the HTTP load starts. `--no-broker-baseline`
//! skips it; `--completed` does not run it.
//!
//! With `--completed`, it also runs a webhook receiver, creates an
//! application whose `status_url` points at it, posts as that application
//! (one RS256 JWT for the run), and reports completed workflows per second
//! and the latency from each POST to its final report webhook: the whole
//! pipeline, notifier included, with the simulator delivering the first
//! step. The system must allow private webhook targets
//! (`DISPATCH_ALLOW_PRIVATE_WEBHOOKS=true`). The workflow is two steps,
//! WhatsApp then SMS, and the first is delivered, so a completed workflow
//! is one send, one receipt and three webhooks. Beside those figures it
//! prints what a completed workflow costs (see [`costs`]): CPU
//! milliseconds per process (RabbitMQ, Redis, the services, the simulator,
//! the bench), from `/proc`, and persistent messages, from RabbitMQ's own
//! counters (`rabbitmqctl eval`), or why they are unavailable.

pub mod broker;
pub mod console;
mod costs;
mod counters;
mod cpu;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

#[derive(clap::Args)]
pub struct Args {
    /// Base URL of the API.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// Concurrent connections (each with one request in flight).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to run, after a one-second warm-up.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, requires = "api_secret")]
    api_key: Option<String>,
    #[arg(long)]
    api_secret: Option<String>,
    /// Requests per second in total; 0 sends as fast as responses allow.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Also receive the webhooks and count final reports.
    #[arg(long)]
    completed: bool,
    /// Do not measure the broker alone before the HTTP load.
    #[arg(long)]
    no_broker_baseline: bool,
    /// How long the broker baseline measures, after a one-second warm-up.
    #[arg(long, default_value_t = 3)]
    broker_seconds: u64,
    /// With `--completed`: the processes to read CPU time of, instead of
    /// those found (`name=pid`, repeat or separate with commas; a name
    /// given several times sums its processes).
    #[arg(long, value_delimiter = ',', value_parser = cpu::parse_pid)]
    pids: Vec<(String, u32)>,
    /// With `--completed`: the `rabbitmqctl` to read the broker's counters
    /// with (by default the private instance's, else the one on `PATH`).
    #[arg(long)]
    rabbitmqctl: Option<PathBuf>,
    /// The private RabbitMQ and Redis instance (`dev_services_up`), whose
    /// node `rabbitmqctl` is pointed at.
    #[arg(long, env = "DISPATCH_DEV_SERVICES_DIR")]
    dev_services_dir: Option<PathBuf>,
}

/// Final reports seen, and when each workflow was posted.
#[derive(Default)]
struct Completions {
    posted: HashMap<String, Instant>,
    latency_us: Vec<u64>,
    completed: u64,
    other: u64,
    /// When each `completed` final report came in (wall clock, µs),
    /// whenever its workflow was posted: the denominators of the costs.
    finished_us: Vec<u64>,
}

const BODY: &str = r#"{"template":"failover","workflow":[
 {"from":{"type":"whatsapp","number":"447700900001"},"to":{"type":"whatsapp","number":"447700900000"},
  "message":{"content":{"type":"text","text":"Your code is 64873"}},
  "failover":{"expiry_time":600,"condition_status":"delivered"}},
 {"from":{"type":"sms","number":"447700900001"},"to":{"type":"sms","number":"447700900000"},
  "message":{"content":{"type":"text","text":"Your code is 64873"}}}]}"#;

struct Tally {
    latency_us: Histogram<u64>,
    accepted: u64,
    failed: u64,
    /// Failures by HTTP status (0: no response).
    failures: std::collections::BTreeMap<u16, u64>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            latency_us: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            accepted: 0,
            failed: 0,
            failures: Default::default(),
        })
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency_us.add(&other.latency_us)?;
        self.accepted += other.accepted;
        self.failed += other.failed;
        for (status, n) in other.failures {
            *self.failures.entry(status).or_default() += n;
        }
        Ok(())
    }
}

/// What every connection task shares.
#[derive(Clone)]
struct Target {
    client: reqwest::Client,
    url: String,
    auth: String,
    /// Each connection's share of `--rate`, as a gap between requests.
    gap: Option<Duration>,
    warmup: Instant,
    end: Instant,
    completions: Option<Arc<Mutex<Completions>>>,
}

pub async fn run(args: Args, config: &dispatch_infra::Config) -> anyhow::Result<()> {
    let (key, secret) = match (&args.api_key, &args.api_secret) {
        (Some(k), Some(s)) => (k.clone(), s.clone()),
        _ => {
            let c = dispatch_ingest::accounts::create_in(config).await?;
            (c.api_key, c.api_secret)
        }
    };
    let costs = if args.completed {
        let options = costs::Options {
            pids: args.pids.clone(),
            rabbitmqctl: args.rabbitmqctl.clone(),
            dev_services_dir: args.dev_services_dir.clone(),
        };
        Some(costs::Costs::prepare(options, config).await)
    } else {
        None
    };
    let baseline = if args.completed || args.no_broker_baseline {
        None
    } else {
        broker_baseline(&args, config).await
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .http1_only()
        .build()?;
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(args.seconds);
    let completions = Arc::new(Mutex::new(Completions::default()));
    let stop = CancellationToken::new();
    let mut auth = basic_auth(&key, &secret);
    if args.completed {
        let hook = receive_final_reports(completions.clone(), warmup, end, stop.clone()).await?;
        auth = application_token(&client, &args.url, &key, &secret, &hook).await?;
    }
    let target = Target {
        client,
        url: format!("{}/v0.1/dispatch", args.url.trim_end_matches('/')),
        auth,
        gap: (args.rate > 0)
            .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64)),
        warmup,
        end,
        completions: args.completed.then(|| completions.clone()),
    };
    let watch = costs.map(|c| c.watch(warmup, end));
    let total = drive(&target, args.connections).await?;
    print_accepted(&args, &total);
    if let Some(watch) = watch {
        finish_completed(&args, watch, &completions, stop).await?;
    } else if let Some(baseline) = baseline {
        print_share(&args, total.accepted, &baseline);
    }
    Ok(())
}

fn basic_auth(key: &str, secret: &str) -> String {
    let credentials = format!("{key}:{secret}");
    let encoded = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, credentials);
    format!("Basic {encoded}")
}

/// Lets the pipeline finish what was accepted, reads the broker's counters
/// again while the receiver still answers, then prints completions and
/// costs.
async fn finish_completed(
    args: &Args,
    watch: costs::Watch,
    completions: &Mutex<Completions>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_secs(2)).await;
    let readings = watch.finish().await;
    stop.cancel();
    let finished = print_completed(args, completions)?;
    readings.print(&finished);
    Ok(())
}

/// Runs the connection tasks to the end of the window and adds up what
/// they saw.
async fn drive(target: &Target, connections: usize) -> anyhow::Result<Tally> {
    let tasks: Vec<_> = (0..connections)
        .map(|_| tokio::spawn(connection(target.clone())))
        .collect();
    let mut total = Tally::new()?;
    for task in tasks {
        total.add(task.await??)?;
    }
    Ok(total)
}

/// One connection: one request at a time until the window ends.
async fn connection(target: Target) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut next = Instant::now();
    loop {
        if let Some(gap) = target.gap {
            tokio::time::sleep_until(next.into()).await;
            next += gap;
        }
        let start = Instant::now();
        if start >= target.end {
            break;
        }
        let status = post(&target, start).await;
        if start < target.warmup {
            continue;
        }
        let us = start.elapsed().as_micros() as u64;
        let _ = tally.latency_us.record(us.max(1));
        if status == 202 {
            tally.accepted += 1;
        } else {
            tally.failed += 1;
            *tally.failures.entry(status).or_default() += 1;
        }
    }
    Ok(tally)
}

/// Posts the workflow once; the HTTP status (0: no response). With
/// `--completed`, remembers when an accepted workflow was posted.
async fn post(target: &Target, start: Instant) -> u16 {
    let response = target
        .client
        .post(&target.url)
        .header("authorization", &target.auth)
        .header("content-type", "application/json")
        .body(BODY)
        .send()
        .await;
    let Ok(response) = response else {
        return 0;
    };
    let status = response.status().as_u16();
    let body = response.bytes().await.unwrap_or_default();
    if let (Some(completions), 202) = (&target.completions, status) {
        let id = serde_json::from_slice::<Value>(&body)
            .ok()
            .and_then(|v| v["dispatch_uuid"].as_str().map(str::to_owned));
        if let Some(id) = id {
            let mut c = completions.lock().unwrap_or_else(|e| e.into_inner());
            c.posted.insert(id, start);
        }
    }
    status
}

fn print_accepted(args: &Args, total: &Tally) {
    let secs = args.seconds as f64;
    let ms = |q: f64| total.latency_us.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "dispatch bench: {} connections, {} s: accepted {} ({:.0}/s), failed {}",
        args.connections,
        args.seconds,
        total.accepted,
        total.accepted as f64 / secs,
        total.failed
    );
    if !total.failures.is_empty() {
        println!("failures by status (0: no response): {:?}", total.failures);
    }
    println!(
        "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        total.latency_us.max() as f64 / 1000.0
    );
}

/// Prints completed workflows and their latency; returns when each
/// completed final report came in.
fn print_completed(
    args: &Args,
    completions: &Mutex<Completions>,
) -> anyhow::Result<costs::Finished> {
    let c = completions.lock().unwrap_or_else(|e| e.into_inner());
    let mut e2e = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?;
    for us in &c.latency_us {
        let _ = e2e.record((*us).max(1));
    }
    let ms = |q: f64| e2e.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "completed workflows: {} in {} s ({:.0}/s); other final reports {}; accepted but not finished {}",
        c.completed,
        args.seconds,
        c.completed as f64 / args.seconds as f64,
        c.other,
        c.posted.len()
    );
    println!(
        "POST to final report ms: p50 {:.1}  p90 {:.1}  p99 {:.1}  max {:.1}",
        ms(0.50),
        ms(0.90),
        ms(0.99),
        e2e.max() as f64 / 1000.0
    );
    Ok(costs::Finished {
        at_us: c.finished_us.clone(),
        unfinished: c.posted.len(),
    })
}

/// Measures the broker alone, as ingest uses it. A failure is printed,
/// not returned: the HTTP figures still come.
async fn broker_baseline(args: &Args, config: &dispatch_infra::Config) -> Option<broker::Report> {
    let load = broker::Load {
        in_flight: args.connections.max(1),
        bytes: broker::DEFAULT_BYTES,
        seconds: args.broker_seconds.max(1),
        queue_type: config.amqp_queue_type.into(),
    };
    match broker::measure(config, load).await {
        Ok(report) => {
            println!(
                "broker baseline, before the HTTP load: {}",
                report.summary()
            );
            println!("{}", report.latency());
            Some(report)
        }
        Err(e) => {
            println!("broker baseline: unavailable ({e})");
            None
        }
    }
}

/// Ingest's accepted rate as a share of the broker's raw publish rate.
fn print_share(args: &Args, accepted: u64, baseline: &broker::Report) {
    let ingest = accepted as f64 / args.seconds.max(1) as f64;
    let raw = baseline.per_sec();
    let share = if raw > 0.0 { ingest / raw * 100.0 } else { 0.0 };
    println!(
        "ingest {}/s = {share:.0} % of the broker's {}/s",
        grouped(ingest.round() as u64),
        grouped(raw.round() as u64),
    );
}

/// `n` with a comma between thousands: 12,300.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// Microseconds since the epoch: the clock RabbitMQ's readings and the
/// webhooks' arrivals are compared on.
fn wall_clock_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Serves final-report webhooks on a free local port until `stop`,
/// counting those of workflows posted in the measuring window that finish
/// by `end`; returns the receiver's URL.
async fn receive_final_reports(
    completions: Arc<Mutex<Completions>>,
    warmup: Instant,
    end: Instant,
    stop: CancellationToken,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/webhooks", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/webhooks",
        axum::routing::post(move |body: axum::Json<Value>| {
            let completions = completions.clone();
            async move {
                let (Some(id), Some(status)) =
                    (body["dispatch_uuid"].as_str(), body["status"].as_str())
                else {
                    return; // a message-status webhook
                };
                if body.get("template").is_none() {
                    return;
                }
                let now = Instant::now();
                let mut c = completions.lock().unwrap_or_else(|e| e.into_inner());
                if status == "completed" {
                    c.finished_us.push(wall_clock_us());
                }
                let posted = c.posted.remove(id);
                if let Some(posted) = posted.filter(|p| *p >= warmup && now <= end) {
                    if status == "completed" {
                        c.completed += 1;
                        c.latency_us
                            .push(now.duration_since(posted).as_micros() as u64);
                    } else {
                        c.other += 1;
                    }
                }
            }
        }),
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
    });
    Ok(url)
}

/// Creates an application whose status webhooks go to `hook`, and returns
/// an `Authorization` value for it (a JWT without `exp`, as SDKs in the
/// field send, signed once for the whole run).
async fn application_token(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    secret: &str,
    hook: &str,
) -> anyhow::Result<String> {
    let created: Value = client
        .post(format!("{}/v2/applications", base.trim_end_matches('/')))
        .basic_auth(key, Some(secret))
        .json(&json!({
            "name": "bench",
            "capabilities": {"messages": {"webhooks": {
                "status_url": {"address": hook, "http_method": "POST"}
            }}}
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let (Some(id), Some(private_key)) = (
        created["id"].as_str(),
        created["keys"]["private_key"].as_str(),
    ) else {
        anyhow::bail!("unexpected application answer: {created}");
    };
    let claims = json!({
        "application_id": id,
        "iat": dispatch_model::record::now_ms() / 1000,
        "jti": uuid::Uuid::new_v4().to_string(),
    });
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private_key.as_bytes())?,
    )?;
    Ok(format!("Bearer {token}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::grouped(0), "0");
        assert_eq!(super::grouped(999), "999");
        assert_eq!(super::grouped(1000), "1,000");
        assert_eq!(super::grouped(12_300), "12,300");
        assert_eq!(super::grouped(1_234_567), "1,234,567");
    }
}
