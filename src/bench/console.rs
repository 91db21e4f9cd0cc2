//! `dispatch bench-console`: how long each console page takes to render
//! with many workflows stored.
//!
//! It runs an ingest in-process against the configured Redis (and
//! RabbitMQ, which only the operator view reads), under a private prefix,
//! and stores `--workflows` finished two-step workflows of one account
//! through the workflow store's own write (so records, message index
//! entries and search keys are laid out as the engine lays them out),
//! spread over `--recipients` numbers and the last half hour, with one
//! number holding a tenth of them all (its last page is deep). A sample of
//! them get webhook attempts; the account gets an application and dead
//! letters.
//!
//! Then, signed in as that account, it fetches each page `--requests`
//! times, one request at a time, and prints p50, p99 and max, and each
//! page's p99 as a multiple of `/healthz`'s measured in the same run (a
//! request that renders nothing: the cost of HTTP itself on this
//! machine). The keys are deleted at the end (they would expire within
//! the hour anyway).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use dispatch_infra::Config;
use dispatch_infra::activity::{self, WebhookLog};
use dispatch_infra::redis::Keys;
use dispatch_infra::store::{WorkflowStore, Write};
use dispatch_model::envelope::{Step, WebhookJob, WebhookKind, WorkflowAccepted, WorkflowKind};
use dispatch_model::record::{MessageStatus, StatusChange, WorkflowRecord, WorkflowStatus, now_ms};
use futures_util::StreamExt as _;
use hdrhistogram::Histogram;
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

#[derive(clap::Args)]
pub struct Args {
    /// Workflows to store before measuring.
    #[arg(long, default_value_t = 100_000)]
    workflows: usize,
    /// Distinct recipient numbers they are sent to.
    #[arg(long, default_value_t = 10_000)]
    recipients: usize,
    /// Requests per page.
    #[arg(long, default_value_t = 300)]
    requests: usize,
    /// Leave the stored workflows in Redis (under the printed prefix).
    #[arg(long)]
    keep: bool,
}

/// The target of every page's p99.
const TARGET_MS: f64 = 100.0;
/// Workflows given webhook attempts and dead letters.
const WITH_WEBHOOKS: usize = 1_000;
const DEAD_LETTERS: usize = 50;

fn number(i: usize, recipients: usize) -> String {
    // Every tenth workflow goes to one number: its pages run deep.
    if i.is_multiple_of(10) {
        "447700000000".to_owned()
    } else {
        format!("4477{:08}", 1 + i % recipients.max(1))
    }
}

fn record(account: &str, i: usize, args: &Args, now: i64) -> WorkflowRecord {
    let to = number(i, args.recipients);
    let step = |channel: &str| Step {
        message_uuid: Uuid::new_v4(),
        message: serde_json::from_value(json!({
            "to": {"type": channel, "number": to},
            "from": {"type": channel, "number": "447700900999"},
            "message": {"content": {"type": "text", "text": "Your code is 123456"}},
            "client_ref": format!("order-{}", i / 2),
        }))
        .unwrap_or_default(),
    };
    // Spread over the last half hour, oldest first.
    let accepted = now - 1_800_000 + (i as i64 * 1_800_000 / args.workflows.max(1) as i64);
    let mut r = WorkflowRecord::new(WorkflowAccepted {
        workflow_id: Uuid::new_v4(),
        kind: WorkflowKind::Dispatch,
        account: account.to_owned(),
        application_id: None,
        accepted_at_ms: accepted,
        steps: vec![step("whatsapp"), step("sms")],
        trace_id: None,
    });
    let at = |status, at_ms| StatusChange { status, at_ms };
    r.status = WorkflowStatus::Completed;
    r.current_step = Some(1);
    r.updated_at_ms = accepted + 1_500;
    r.finished_at_ms = Some(accepted + 1_500);
    r.steps[0].channel = Some(dispatch_model::Channel::Whatsapp);
    r.steps[0].sent_at_ms = Some(accepted);
    r.steps[0].history = vec![at(MessageStatus::Submitted, accepted + 100)];
    r.steps[0].deadline_ms = Some(accepted + 1_000);
    r.steps[0].expired_at_ms = Some(accepted + 1_000);
    r.steps[0].provider = Some("simulator".into());
    r.steps[1].channel = Some(dispatch_model::Channel::Sms);
    r.steps[1].sent_at_ms = Some(accepted + 1_000);
    r.steps[1].provider = Some("simulator".into());
    r.steps[1].history = vec![
        at(MessageStatus::Submitted, accepted + 1_100),
        at(MessageStatus::Delivered, accepted + 1_500),
    ];
    r
}

pub async fn run(args: Args, config: &Config) -> anyhow::Result<()> {
    let tag = format!("cbench{}", Uuid::new_v4().simple());
    let mut config = config.clone();
    config.redis_prefix = tag.clone();
    config.amqp_prefix = tag.clone();
    config.amqp_queue_expires_ms = Some(60_000);
    config.record_ttl_secs = 3_600;
    config.idempotency_ttl_secs = config.idempotency_ttl_secs.min(3_600);
    config.http_addr = "127.0.0.1:0".parse()?;
    config.public_url = None;
    config.console_enabled = true;
    config.console_sign_ins_per_min = 1_000;
    // Requests one after another from one client: no account rate.
    config.account_rate_per_sec = 0;
    let shutdown = CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let running = dispatch_ingest::spawn(config.clone(), shutdown.clone()).await?;
    let base = format!("http://{}", running.addr);
    let redis = running.state.redis.clone();
    let keys = Keys::for_config(&config);
    let account = dispatch_ingest::accounts::create(&mut redis.clone(), &keys, 0)
        .await
        .context("creating the account")?;
    let key = account.api_key.clone();

    println!(
        "storing {} workflows to {} numbers under prefix {tag} ...",
        args.workflows, args.recipients
    );
    let started = Instant::now();
    let store = WorkflowStore::new(redis.clone(), keys.clone(), config.record_ttl_secs);
    let now = now_ms();
    let mut ids = Vec::with_capacity(args.workflows);
    let mut writes = futures_util::stream::iter(0..args.workflows)
        .map(|i| {
            let (store, keys, key) = (store.clone(), keys.clone(), key.clone());
            let r = record(&key, i, &args, now);
            async move {
                let id = r.workflow.workflow_id.to_string();
                let indexes: Vec<(String, String)> = r
                    .steps
                    .iter()
                    .map(|s| (keys.message(&s.message_uuid.to_string()), id.clone()))
                    .collect();
                let search = activity::search_keys(&keys, &r.workflow);
                store
                    .write(&Write {
                        id: &id,
                        expected: None,
                        record: &r,
                        in_flight: 0,
                        current: None,
                        schedule: Vec::new(),
                        cancel: Vec::new(),
                        indexes: &indexes,
                        search: &search,
                        stats: &[],
                        recovery_due_ms: 0,
                        own_from: 0,
                    })
                    .await
                    .map(|_| (id, r))
            }
        })
        .buffer_unordered(64);
    let mut sample = Vec::new();
    while let Some(written) = writes.next().await {
        let (id, r) = written?;
        if sample.len() < WITH_WEBHOOKS {
            sample.push(r);
        }
        ids.push(id);
    }
    drop(writes);
    seed_activity(&redis, &keys, &key, &sample, &config).await?;
    println!(
        "stored in {:.1} s; measuring {} requests per page",
        started.elapsed().as_secs_f64(),
        args.requests
    );

    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&client, &base, &key, &account.api_secret).await?;
    let workflow = &sample[sample.len() / 2];
    let workflow_id = workflow.workflow.workflow_id;
    let message = workflow.steps[1].message_uuid;
    let some_number = number(7, args.recipients);
    let deep = (args.workflows / 10).div_ceil(20).clamp(1, 10_000);
    let pages: Vec<(&str, String)> = vec![
        ("/healthz (baseline)", "/healthz".into()),
        ("overview", "/console".into()),
        ("overview, live part", "/console/live".into()),
        (
            "search by number",
            format!("/console/search?q=%2B{some_number}"),
        ),
        (
            "search, last page of the busiest number",
            format!("/console/search?q=447700000000&page={deep}"),
        ),
        (
            "search by client_ref",
            "/console/search?q=order-4321".into(),
        ),
        (
            "search by message uuid",
            format!("/console/search?q={message}"),
        ),
        ("timeline", format!("/console/workflows/{workflow_id}")),
        (
            "timeline by message uuid",
            format!("/console/workflows/{message}"),
        ),
        ("dead letters", "/console/dead-letters".into()),
        ("applications", "/console/applications".into()),
        (
            "erasure's confirmation",
            format!("/console/erase?number={some_number}"),
        ),
    ];
    println!(
        "{:<42} {:>8} {:>8} {:>8} {:>12}",
        "page", "p50 ms", "p99 ms", "max ms", "p99/healthz"
    );
    let mut baseline = None;
    let mut worst: f64 = 0.0;
    for (name, path) in &pages {
        let mut histogram = Histogram::<u64>::new(3)?;
        let url = format!("{base}{path}");
        for i in 0..args.requests + 10 {
            let sent = Instant::now();
            let response = client.get(&url).header("cookie", &cookie).send().await?;
            let status = response.status();
            let body = response.text().await?;
            anyhow::ensure!(
                status.is_success() || status.is_redirection(),
                "{path}: {status}"
            );
            // A search that found nothing would measure nothing.
            anyhow::ensure!(
                !path.starts_with("/console/search")
                    || status.is_redirection()
                    || body.contains("href=\"/console/workflows/"),
                "{path} found nothing"
            );
            // The first ten warm the connection and caches.
            if i >= 10 {
                histogram.record(sent.elapsed().as_micros() as u64)?;
            }
        }
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        let p99 = ms(0.99);
        let ratio = match baseline {
            None => {
                baseline = Some(p99.max(0.001));
                "1.0".to_owned()
            }
            Some(b) => {
                worst = worst.max(p99);
                format!("{:.1}", p99 / b)
            }
        };
        println!(
            "{name:<42} {:>8.2} {p99:>8.2} {:>8.2} {ratio:>12}",
            ms(0.5),
            histogram.max() as f64 / 1000.0
        );
    }
    println!(
        "slowest page p99: {worst:.2} ms with {} workflows stored ({} the {TARGET_MS:.0} ms target)",
        args.workflows,
        if worst < TARGET_MS { "within" } else { "over" }
    );
    if !args.keep {
        forget(&redis, &tag).await;
    }
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), running.task).await;
    Ok(())
}

/// Webhook attempts of the sampled workflows, counters of the last hour,
/// an application, and dead letters.
async fn seed_activity(
    redis: &dispatch_infra::redis::Redis,
    keys: &Keys,
    account: &str,
    sample: &[WorkflowRecord],
    config: &Config,
) -> anyhow::Result<()> {
    let mut pipe = redis::pipe();
    for (i, r) in sample.iter().enumerate() {
        let id = r.workflow.workflow_id.to_string();
        for step in &r.steps {
            for change in &step.history {
                let entry = WebhookLog {
                    webhook_id: format!("{}:{}", step.message_uuid, change.status.as_str()),
                    kind: "message_status".into(),
                    message_uuid: Some(step.message_uuid.to_string()),
                    at_ms: change.at_ms + 20,
                    status: Some(200),
                    latency_ms: 12,
                    outcome: "delivered".into(),
                    error: None,
                };
                activity::log_into(&mut pipe, keys, &id, &entry, config.record_ttl_secs);
            }
        }
        if i < DEAD_LETTERS {
            let job = WebhookJob {
                webhook_id: format!("{id}:final"),
                kind: WebhookKind::FinalReport,
                account: account.to_owned(),
                application_id: None,
                workflow_id: r.workflow.workflow_id,
                event_at_ms: r.finished_at_ms.unwrap_or_default(),
                body: json!({"dispatch_uuid": id, "status": "completed"}),
                url: None,
                attempts: 5,
                reason: Some("5 attempts failed, the last: HTTP 503".into()),
            };
            pipe.cmd("HSET")
                .arg(keys.dead_letters(account))
                .arg(&job.webhook_id)
                .arg(serde_json::to_string(&job)?)
                .ignore();
        }
    }
    let now = now_ms();
    for minute in 0..60 {
        let at = now - minute * 60_000;
        use activity::Stat;
        let stats = [
            Stat::Accepted,
            Stat::Completed,
            Stat::Failover("deadline"),
            Stat::FailoverFrom("whatsapp"),
            Stat::WebhookDelivered,
        ];
        activity::count_into(&mut pipe, keys, account, &stats, at);
    }
    pipe.exec_async(&mut redis.clone()).await?;
    Ok(())
}

async fn sign_in(
    client: &reqwest::Client,
    base: &str,
    key: &str,
    secret: &str,
) -> anyhow::Result<String> {
    let form = client.get(format!("{base}/console/login")).send().await?;
    let form_cookie = cookie_of(&form, "dispatch_console_form").context("no form cookie")?;
    let page = form.text().await?;
    let at = page
        .find(r#"name="csrf" value=""#)
        .context("no csrf field")?
        + 19;
    let csrf = page[at..].split('"').next().unwrap_or_default().to_owned();
    let body = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("csrf", &csrf)
        .append_pair("api_key", key)
        .append_pair("api_secret", secret)
        .finish();
    let signed = client
        .post(format!("{base}/console/login"))
        .header("cookie", format!("dispatch_console_form={form_cookie}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await?;
    let session = cookie_of(&signed, "dispatch_console").context("not signed in")?;
    Ok(format!("dispatch_console={session}"))
}

fn cookie_of(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(|v| v.split(';').next()?.split_once('='))
        .find(|(n, v)| *n == name && !v.is_empty())
        .map(|(_, v)| v.to_owned())
}

/// Deletes the run's keys (on a standalone Redis; a cluster's expire).
async fn forget(redis: &dispatch_infra::redis::Redis, prefix: &str) {
    let mut conn = redis.clone();
    let mut cursor: u64 = 0;
    loop {
        let scanned: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{prefix}:*"))
            .arg("COUNT")
            .arg(1_000)
            .query_async(&mut conn)
            .await;
        let Ok((next, found)) = scanned else {
            println!("left the keys under {prefix} to expire within the hour");
            return;
        };
        if !found.is_empty() {
            let _: redis::RedisResult<()> = redis::cmd("UNLINK")
                .arg(&found)
                .query_async(&mut conn)
                .await;
        }
        if next == 0 {
            return;
        }
        cursor = next;
    }
}
