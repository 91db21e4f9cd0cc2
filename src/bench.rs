//! `dispatch bench`: a load generator for `POST /v0.1/dispatch`.
//!
//! `--connections` tasks each send one request at a time for `--seconds`,
//! over keep-alive HTTP/1.1 connections (closed loop), or at most `--rate`
//! requests per second in total (open loop). Latency is measured per request
//! from send to full response; the report gives accepted (202) requests per
//! second and p50/p90/p99/max. Without `--api-key`, an account is created
//! in the configured Redis first.
//!
//! With `--completed`, it also runs a webhook receiver, creates an
//! application whose `status_url` points at it, posts as that application
//! (one RS256 JWT for the run), and reports completed workflows per second
//! and the latency from each POST to its final report webhook: the whole
//! pipeline, notifier included, with the simulator delivering the first
//! step. The system must allow private webhook targets
//! (`DISPATCH_ALLOW_PRIVATE_WEBHOOKS=true`). The workflow is two steps,
//! WhatsApp then SMS, and the first is delivered, so a completed workflow
//! is one send, one receipt and three webhooks.

use std::collections::HashMap;
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
    let mut auth = format!(
        "Basic {}",
        base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{key}:{secret}")
        )
    );
    if args.completed {
        let hook = receive_final_reports(completions.clone(), warmup, end, stop.clone()).await?;
        auth = application_token(&client, &args.url, &key, &secret, &hook).await?;
    }
    // Each connection's share of `--rate`, as a gap between requests.
    let gap = (args.rate > 0)
        .then(|| Duration::from_secs_f64(args.connections as f64 / args.rate as f64));
    let mut tasks = Vec::new();
    for _ in 0..args.connections {
        let (client, url, auth) = (client.clone(), url.clone(), auth.clone());
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
                    .header("authorization", &auth)
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
