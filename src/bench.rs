//! `dispatch bench`: a load generator for `POST /v0.1/dispatch`.
//!
//! `--connections` tasks each send one request at a time for `--seconds`,
//! over keep-alive HTTP/1.1 connections (closed loop), or at most `--rate`
//! requests per second in total (open loop). Latency is measured per request
//! from send to full response; the report gives accepted (202) requests per
//! second and p50/p90/p99/max. Without `--api-key`, an account is created
//! in the configured Redis first.
//!
//! With `--completed`, it also consumes the webhook jobs (there must be no
//! other consumer of the `webhooks` queue, such as a notifier) and reports
//! completed workflows per second and the latency from each POST to its
//! final report: the whole pipeline, with the simulator delivering the first
//! step. The workflow is two steps, WhatsApp then SMS, and the first is
//! delivered, so a completed workflow is one send, one receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dispatch_infra::broker::Broker;
use dispatch_infra::consume::{ConsumeOptions, Outcome, consume};
use dispatch_model::envelope::{Envelope, WebhookKind};
use hdrhistogram::Histogram;
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
    /// Also count final reports from the webhooks queue.
    #[arg(long)]
    completed: bool,
}

/// Final reports seen, and when each workflow was posted.
#[derive(Default)]
struct Completions {
    posted: HashMap<String, Instant>,
    latency_us: Vec<u64>,
    completed: u64,
    other: u64,
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
}

pub async fn run(args: Args, config: &dispatch_infra::Config) -> anyhow::Result<()> {
    let (key, secret) = match (args.api_key, args.api_secret) {
        (Some(k), Some(s)) => (k, s),
        _ => {
            let c = dispatch_ingest::accounts::create_in(config).await?;
            (c.api_key, c.api_secret)
        }
    };
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .http1_only()
        .build()?;
    let url = format!("{}/v0.1/dispatch", args.url.trim_end_matches('/'));
    let warmup = Instant::now() + Duration::from_secs(1);
    let end = warmup + Duration::from_secs(args.seconds);
    let completions = Arc::new(Mutex::new(Completions::default()));
    let stop = CancellationToken::new();
    if args.completed {
        watch_final_reports(config, completions.clone(), warmup, end, stop.clone()).await?;
    }
    // Each connection's share of `--rate`, as a gap between requests.
    let gap = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, key, secret) = (client.clone(), url.clone(), key.clone(), secret.clone());
        let completions = args.completed.then(|| completions.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            let mut next = Instant::now();
            loop {
                if let Some(gap) = gap {
                    tokio::time::sleep_until(next.into()).await;
                    next += gap;
                }
                let start = Instant::now();
                if start >= end {
                    break;
                }
                let response = client
                    .post(&url)
                    .basic_auth(&key, Some(&secret))
                    .header("content-type", "application/json")
                    .body(BODY)
                    .send()
                    .await;
                let status = match response {
                    Ok(r) => {
                        let status = r.status().as_u16();
                        let body = r.bytes().await.unwrap_or_default();
                        if let (Some(completions), 202) = (&completions, status) {
                            let id = serde_json::from_slice::<serde_json::Value>(&body)
                                .ok()
                                .and_then(|v| v["dispatch_uuid"].as_str().map(str::to_owned));
                            if let Some(id) = id {
                                let mut c = completions.lock().unwrap_or_else(|e| e.into_inner());
                                c.posted.insert(id, start);
                            }
                        }
                        status
                    }
                    Err(_) => 0,
                };
                if start < warmup {
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
            anyhow::Ok(tally)
        }));
    }
    let mut total = Tally::new()?;
    for task in tasks {
        let t = task.await??;
        total.latency_us.add(&t.latency_us)?;
        total.accepted += t.accepted;
        total.failed += t.failed;
        for (status, n) in t.failures {
            *total.failures.entry(status).or_default() += n;
        }
    }
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
    if args.completed {
        // Let the pipeline finish what was accepted in the window.
        tokio::time::sleep(Duration::from_secs(2)).await;
        stop.cancel();
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
            c.completed as f64 / secs,
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
    }
    Ok(())
}

/// Consumes webhook jobs until `stop`, counting the final reports of the
/// workflows posted in the measuring window that finish by `end`.
async fn watch_final_reports(
    config: &dispatch_infra::Config,
    completions: Arc<Mutex<Completions>>,
    warmup: Instant,
    end: Instant,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let broker = Broker::start(config, "bench", stop.clone());
    anyhow::ensure!(
        broker.wait_ready(Duration::from_secs(10)).await,
        "cannot reach RabbitMQ at amqp_url"
    );
    let options = ConsumeOptions::new(broker.topology().webhooks_queue(), 1000);
    tokio::spawn(consume(broker, options, stop, move |incoming| {
        let completions = completions.clone();
        async move {
            let Ok(Envelope::Webhook(job)) = serde_json::from_slice(&incoming.payload) else {
                return Outcome::Ack;
            };
            if job.kind != WebhookKind::FinalReport {
                return Outcome::Ack;
            }
            let now = Instant::now();
            let mut c = completions.lock().unwrap_or_else(|e| e.into_inner());
            let posted = c.posted.remove(&job.workflow_id.to_string());
            if let Some(posted) = posted.filter(|p| *p >= warmup && now <= end) {
                if job.body["status"] == "completed" {
                    c.completed += 1;
                    c.latency_us
                        .push(now.duration_since(posted).as_micros() as u64);
                } else {
                    c.other += 1;
                }
            }
            Outcome::Ack
        }
    }));
    Ok(())
}
