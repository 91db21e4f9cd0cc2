//! Lateness benchmark: how late do deadlines fire with many pending?
//!
//! Loads `pending` far-future entries, runs a timer in-process, schedules
//! `fire` entries at `rate` per second, each due `lead_ms` later, and
//! measures, for each, the time from its due time to its receipt by a
//! consumer of a private queue. Receipt comes after the broker's confirm
//! of the publish, so the figures are an upper bound of due → published.
//! Everything runs under a private random prefix and is removed afterwards.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dispatch_infra::Config;
use dispatch_infra::broker::Broker;
use dispatch_infra::redis::Keys;
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, ExchangeDeleteOptions, QueueBindOptions, QueueDeclareOptions,
    QueueDeleteOptions,
};
use lapin::types::FieldTable;
use tokio_util::sync::CancellationToken;

use crate::Scheduler;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Far-future entries loaded before the run.
    #[arg(long, default_value_t = 1_000_000)]
    pub pending: u64,
    /// Entries scheduled (and fired) during the run.
    #[arg(long, default_value_t = 20_000)]
    pub fire: u64,
    /// Entries scheduled per second.
    #[arg(long, default_value_t = 2_000)]
    pub rate: u64,
    /// How far ahead of its scheduling each entry is due, in ms.
    #[arg(long = "lead-ms", default_value_t = 200)]
    pub lead_ms: u64,
}

const LOAD_CHUNK: u64 = 10_000;
const LOADS_IN_FLIGHT: usize = 4;
const ROUTING_KEY: &str = "bench.timer.fired";

fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub async fn run_bench(config: &Config, args: BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rate > 0, "--rate must be above zero");
    let mut prefix = format!("tbench{}", uuid::Uuid::new_v4().simple());
    prefix.truncate(64);
    let mut config = config.clone();
    config.redis_prefix = prefix.clone();
    config.amqp_prefix = prefix.clone();
    let keys = Keys::for_config(&config);
    let redis = dispatch_infra::redis::connect(&config)?;
    let scheduler = Scheduler::new(redis.clone(), keys.clone());

    let infra = CancellationToken::new();
    let _stop_infra = infra.clone().drop_guard();
    let broker = Broker::start(&config, "timer-bench", infra.clone());
    anyhow::ensure!(
        broker.wait_ready(Duration::from_secs(10)).await,
        "RabbitMQ is not reachable at the configured amqp_url"
    );
    let result = measure(&config, &args, &keys, &redis, &scheduler, &broker).await;
    let cleaned = clean_up(&redis, &keys, &broker).await;
    result.and(cleaned)
}

async fn measure(
    config: &Config,
    args: &BenchArgs,
    keys: &Keys,
    redis: &dispatch_infra::redis::Redis,
    scheduler: &Scheduler,
    broker: &Broker,
) -> anyhow::Result<()> {
    // The consumer's queue, durable like the service queues.
    let connection = broker.connection().context("broker connection lost")?;
    let channel = connection.create_channel().await?;
    let queue = format!("{}.bench", config.amqp_prefix);
    let mut queue_args = FieldTable::default();
    queue_args.insert(
        "x-queue-type".into(),
        lapin::types::AMQPValue::LongString(config.amqp_queue_type.as_str().into()),
    );
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions::durable(),
            queue_args,
        )
        .await?;
    channel
        .queue_bind(
            queue.as_str().into(),
            config.amqp_prefix.as_str().into(),
            ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.as_str().into(),
            "bench".into(),
            BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;

    // Bulk load: raw pipelined ZADD + HSET, chunks of LOAD_CHUNK.
    let started = Instant::now();
    load_pending(redis, keys, args.pending).await?;
    let loaded = scheduler.pending().await?;
    println!(
        "loaded {loaded} pending entries in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    // The timer, in-process.
    let timer_shutdown = CancellationToken::new();
    let timer = tokio::spawn(crate::run(config.clone(), timer_shutdown.clone()));
    let _stop_timer = timer_shutdown.clone().drop_guard();

    // Warm-up: one entry due now proves the whole path works.
    let probe_payload = serde_json::json!({ "due_ms": now_us() / 1000, "seq": -1 }).to_string();
    scheduler
        .schedule(
            "probe",
            now_us() / 1000,
            ROUTING_KEY,
            "probe",
            &probe_payload,
        )
        .await?;
    tokio::time::timeout(Duration::from_secs(15), consumer.next())
        .await
        .context("the timer did not fire the warm-up entry within 15 s")?
        .context("consumer ended")??;

    // Producer: `rate` per second, each due `lead_ms` later.
    let producer = {
        let scheduler = scheduler.clone();
        let args = args.clone();
        tokio::spawn(async move {
            let start = Instant::now();
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut sent = 0u64;
            let mut errors = 0u64;
            while sent < args.fire {
                tick.tick().await;
                let target =
                    ((start.elapsed().as_secs_f64() * args.rate as f64) as u64).min(args.fire);
                let due_ms = now_us() / 1000 + args.lead_ms as i64;
                let batch = (sent..target).map(|seq| {
                    let scheduler = scheduler.clone();
                    async move {
                        let payload =
                            serde_json::json!({ "due_ms": due_ms, "seq": seq }).to_string();
                        let id = format!("fire-{seq}");
                        scheduler
                            .schedule(&id, due_ms, ROUTING_KEY, &id, &payload)
                            .await
                    }
                });
                errors += futures_util::future::join_all(batch)
                    .await
                    .iter()
                    .filter(|r| r.is_err())
                    .count() as u64;
                sent = target;
            }
            (start.elapsed(), errors)
        })
    };

    // Consumer: lateness from due time to receipt, in µs.
    let mut histogram = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut seen = HashSet::with_capacity(args.fire as usize);
    let (mut duplicates, mut early) = (0u64, 0u64);
    let expected_secs = args.fire as f64 / args.rate as f64;
    let deadline = Instant::now()
        + Duration::from_secs_f64(expected_secs)
        + Duration::from_millis(args.lead_ms)
        + Duration::from_secs(30);
    while (seen.len() as u64) < args.fire {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(delivery) = tokio::time::timeout(left, consumer.next()).await else {
            break;
        };
        let delivery = delivery.context("consumer ended")??;
        let received_us = now_us();
        let body: serde_json::Value = serde_json::from_slice(&delivery.data)?;
        let (Some(due_ms), Some(seq)) = (body["due_ms"].as_i64(), body["seq"].as_i64()) else {
            anyhow::bail!("unexpected payload {body}");
        };
        if seq < 0 {
            continue; // a late copy of the probe
        }
        if !seen.insert(seq) {
            duplicates += 1;
            continue;
        }
        let lateness_us = received_us - due_ms * 1000;
        if lateness_us < 0 {
            early += 1;
        }
        histogram.saturating_record(u64::try_from(lateness_us).unwrap_or(0).max(1));
    }
    let (produced_in, schedule_errors) = producer.await?;
    timer_shutdown.cancel();
    timer.await??;
    let pending_after = scheduler.pending().await?;
    let ms = |us: u64| us as f64 / 1000.0;

    println!(
        "scheduled {} entries in {:.1} s ({:.0}/s, lead {} ms, {} schedule errors) over {} pending",
        args.fire,
        produced_in.as_secs_f64(),
        args.fire as f64 / produced_in.as_secs_f64().max(1e-9),
        args.lead_ms,
        schedule_errors,
        loaded,
    );
    println!(
        "received {} of {} ({} duplicates, {} early)",
        seen.len(),
        args.fire,
        duplicates,
        early
    );
    println!(
        "lateness due -> received by the consumer (an upper bound of due -> published): \
         p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms, max {:.1} ms",
        ms(histogram.value_at_quantile(0.50)),
        ms(histogram.value_at_quantile(0.90)),
        ms(histogram.value_at_quantile(0.99)),
        ms(histogram.value_at_quantile(0.999)),
        ms(histogram.max()),
    );
    println!("pending after the run: {pending_after} (expected {loaded})");
    let _ = channel.close(200, "bench done".into()).await;
    anyhow::ensure!(
        seen.len() as u64 == args.fire,
        "only {} of {} entries fired",
        seen.len(),
        args.fire
    );
    Ok(())
}

/// Loads `count` far-future entries with raw pipelined commands.
async fn load_pending(
    redis: &dispatch_infra::redis::Redis,
    keys: &Keys,
    count: u64,
) -> anyhow::Result<()> {
    let far = now_us() / 1000 + 86_400_000;
    let chunks = (0..count).step_by(LOAD_CHUNK as usize).map(|start| {
        let end = (start + LOAD_CHUNK).min(count);
        let mut conn = redis.clone();
        let keys = keys.clone();
        async move {
            // One ZADD and one HSET per shard the chunk's ids fall in.
            let shards = keys.timer_shards();
            let mut zadds: Vec<redis::Cmd> = (0..shards)
                .map(|shard| {
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(keys.timer_due(shard));
                    zadd
                })
                .collect();
            let mut hsets: Vec<redis::Cmd> = (0..shards)
                .map(|shard| {
                    let mut hset = redis::cmd("HSET");
                    hset.arg(keys.timer_entries(shard));
                    hset
                })
                .collect();
            let mut used = vec![false; shards];
            for i in start..end {
                let id = format!("pending-{i}");
                let shard = keys.timer_shard_of(&id);
                used[shard] = true;
                zadds[shard].arg(far + i as i64).arg(&id);
                let entry = serde_json::json!({
                    "routing_key": ROUTING_KEY,
                    "message_id": id,
                    "payload": "{}",
                });
                hsets[shard].arg(&id).arg(entry.to_string());
            }
            let mut pipe = redis::pipe();
            for ((zadd, hset), used) in zadds.into_iter().zip(hsets).zip(used) {
                if used {
                    pipe.add_command(zadd).ignore().add_command(hset).ignore();
                }
            }
            pipe.exec_async(&mut conn).await
        }
    });
    let mut loads = futures_util::stream::iter(chunks).buffer_unordered(LOADS_IN_FLIGHT);
    while let Some(loaded) = loads.next().await {
        loaded?;
    }
    Ok(())
}

async fn clean_up(
    redis: &dispatch_infra::redis::Redis,
    keys: &Keys,
    broker: &Broker,
) -> anyhow::Result<()> {
    let mut conn = redis.clone();
    for shard in 0..keys.timer_shards() {
        redis::cmd("UNLINK")
            .arg(keys.timer_due(shard))
            .arg(keys.timer_entries(shard))
            .arg(keys.timer_owner(shard))
            .exec_async(&mut conn)
            .await?;
    }
    redis::cmd("UNLINK")
        .arg(keys.timers())
        .exec_async(&mut conn)
        .await?;
    let connection = broker.connection().context("broker connection lost")?;
    let channel = connection.create_channel().await?;
    let topology = broker.topology();
    let mut queues: Vec<String> = topology.queues().into_iter().map(|q| q.name).collect();
    queues.push(format!("{}.bench", topology.exchange));
    for queue in queues {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    channel
        .exchange_delete(
            topology.exchange.as_str().into(),
            ExchangeDeleteOptions::default(),
        )
        .await?;
    let _ = channel.close(200, "bench cleaned up".into()).await;
    Ok(())
}
