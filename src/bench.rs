//! `dispatch bench`: a closed-loop load generator for `POST /v0.1/dispatch`.
//!
//! `--connections` tasks each send one request at a time for `--seconds`,
//! over keep-alive HTTP/1.1 connections. Latency is measured per request
//! from send to full response; the report gives accepted (202) requests per
//! second and p50/p90/p99/max. Without `--api-key`, an account is created
//! in the configured Redis first.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

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
}

const BODY: &str = r#"{"template":"failover","workflow":[
 {"from":{"type":"whatsapp","number":"447700900001"},"to":{"type":"whatsapp","number":"447700900000"},
  "message":{"content":{"type":"text","text":"Your code is 64873"}},
  "failover":{"expiry_time":600,"condition_status":"read"}},
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
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, key, secret) = (client.clone(), url.clone(), key.clone(), secret.clone());
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::new()?;
            loop {
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
                        let _ = r.bytes().await;
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
    Ok(())
}
