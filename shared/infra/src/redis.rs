//! Redis: one shared connection per process, and the key layout.
//!
//! The connection is multiplexed, so concurrent requests pipeline their
//! commands over one socket instead of each taking a pooled connection
//! (measured: fewer syscalls and wake-ups per request, see
//! docs/benchmarks.md), and reconnects by itself after an outage. It
//! connects lazily: a missing Redis makes `/readyz` red and commands fail,
//! it never stops start-up.
//!
//! With `redis_cluster` it is the redis crate's cluster connection
//! instead: `redis_url` is one seed node, the others are discovered, and
//! each command goes to the master of its key's slot. Everything else is
//! the same code: [`Redis`] is one type for both. A script or a
//! transaction must keep to one slot (the key layout's hash tags see to
//! that); a plain pipeline may not, so on a cluster [`Redis`] sends each
//! run of consecutive commands for one slot as a pipeline of its own, in
//! order.
//!
//! Every key starts with `redis_prefix`, so that deployments and test runs
//! can share one Redis. The layout is written down here once; services
//! build keys only through [`Keys`].

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};

use crate::config::Config;

/// A connection to Redis, standalone or a cluster. Cheap to clone: clones
/// share the connection.
#[derive(Clone)]
pub enum Redis {
    Standalone(ConnectionManager),
    Cluster(Arc<Cluster>),
}

/// The cluster connection, made again from the seeds when commands keep
/// failing for want of a node: the redis crate's connection (1.8) did not
/// find its way back after a master was killed and its replica promoted
/// (`tests/cluster/chaos.rs`), while a new one, asking a live seed for the
/// slots, does at once.
pub struct Cluster {
    client: redis::cluster::ClusterClient,
    connection: RwLock<ClusterConnection>,
    /// Failures in a row for want of a node.
    failures: AtomicU32,
    rebuilt: Mutex<Instant>,
}

/// Failures in a row after which the cluster connection is made again,
/// and the least time between two rebuilds.
const REBUILD_AFTER: u32 = 3;
const REBUILD_EVERY: Duration = Duration::from_secs(1);

impl Cluster {
    fn connection(&self) -> ClusterConnection {
        self.connection
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts an outcome; rebuilds the connection after enough failures
    /// that a node's loss explains (I/O, timeouts, no connection to the
    /// slot's node).
    fn note<T>(&self, result: &redis::RedisResult<T>) {
        match result {
            Ok(_) => self.failures.store(0, Ordering::Relaxed),
            Err(e)
                if e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
                    || e.kind() == redis::ErrorKind::ClusterConnectionNotFound =>
            {
                if self.failures.fetch_add(1, Ordering::Relaxed) + 1 < REBUILD_AFTER {
                    return;
                }
                let mut rebuilt = self.rebuilt.lock().unwrap_or_else(|e| e.into_inner());
                if rebuilt.elapsed() < REBUILD_EVERY {
                    return;
                }
                *rebuilt = Instant::now();
                self.failures.store(0, Ordering::Relaxed);
                let fresh = self
                    .client
                    .get_pending_async_connection_with_config(cluster_settings());
                *self.connection.write().unwrap_or_else(|e| e.into_inner()) = fresh;
                tracing::warn!(error = %e, "Redis Cluster commands keep failing; connecting to it again from its seeds");
                metrics::counter!("dispatch_redis_cluster_reconnects_total").increment(1);
            }
            Err(_) => {}
        }
    }
}

fn cluster_settings() -> redis::cluster::ClusterConfig {
    redis::cluster::ClusterConfig::new()
        .set_connection_timeout(CONNECTION_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Redis::Standalone(c) => c.req_packed_command(cmd),
            Redis::Cluster(cluster) => Box::pin(async move {
                let result = cluster.connection().req_packed_command(cmd).await;
                cluster.note(&result);
                result
            }),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Redis::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Redis::Cluster(cluster) => Box::pin(async move {
                let result =
                    cluster_pipeline(&mut cluster.connection(), pipeline, offset, count).await;
                cluster.note(&result);
                result
            }),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Redis::Standalone(c) => c.get_db(),
            Redis::Cluster(_) => 0,
        }
    }
}

/// A pipeline on a cluster: as it is when it keeps to one slot (or is a
/// transaction, which must), else run by run, in order, stopping at the
/// first run that fails: what follows may count on it (a record written
/// only after what must not be missing from it).
async fn cluster_pipeline(
    c: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> redis::RedisResult<Vec<Value>> {
    let runs = slot_runs(pipeline);
    if pipeline.is_transaction() || runs.len() <= 1 {
        return c.req_packed_commands(pipeline, offset, count).await;
    }
    let mut values = Vec::with_capacity(pipeline.len());
    for run in runs {
        let mut part = redis::pipe();
        for cmd in run {
            part.add_command(cmd.clone());
        }
        let answered = c.req_packed_commands(&part, 0, part.len()).await?;
        if let Some(Value::ServerError(e)) =
            answered.iter().find(|v| matches!(v, Value::ServerError(_)))
        {
            return Err(e.clone().into());
        }
        values.extend(answered);
    }
    Ok(values)
}

/// The first key a command names (`None`: it names none, or names them
/// elsewhere than after its name, as no command of ours does but EVAL).
fn first_key(cmd: &Cmd) -> Option<&[u8]> {
    let mut args = cmd.args_iter().map(|a| match a {
        redis::Arg::Simple(bytes) => bytes,
        _ => &b""[..],
    });
    let name = args.next()?;
    if name.eq_ignore_ascii_case(b"EVAL") || name.eq_ignore_ascii_case(b"EVALSHA") {
        let _script = args.next()?;
        let keys = std::str::from_utf8(args.next()?).ok()?;
        return (keys.parse::<u32>().ok()? > 0)
            .then(|| args.next())
            .flatten();
    }
    // PUBLISH is not among them: the cluster connection routes it by its
    // channel, as if that were a key.
    const KEYLESS: [&[u8]; 7] = [
        b"PING", b"TIME", b"INFO", b"SCRIPT", b"CLUSTER", b"WAIT", b"ACL",
    ];
    if KEYLESS.iter().any(|k| name.eq_ignore_ascii_case(k)) {
        return None;
    }
    args.next()
}

/// A pipeline's commands cut into runs of consecutive commands for one
/// slot (a command naming no key joins the run it is in).
fn slot_runs(pipeline: &Pipeline) -> Vec<Vec<&Cmd>> {
    let mut runs: Vec<(Option<u16>, Vec<&Cmd>)> = Vec::new();
    for cmd in pipeline.cmd_iter() {
        let slot = first_key(cmd).map(slot_of);
        match runs.last_mut() {
            Some((run_slot, cmds)) if slot.is_none() || *run_slot == slot || run_slot.is_none() => {
                if run_slot.is_none() {
                    *run_slot = slot;
                }
                cmds.push(cmd);
            }
            _ => runs.push((slot, vec![cmd])),
        }
    }
    runs.into_iter().map(|(_, cmds)| cmds).collect()
}

/// A key's cluster slot: CRC16 of its hash tag (the part between the first
/// `{` and the next `}`, when not empty), else of the whole key.
pub fn slot_of(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16_xmodem(tagged.unwrap_or(key)) % 16384
}

fn crc16_xmodem(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in data {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// Waiting for replicas after a hand-off write (`redis_wait_replicas`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicated {
    pub replicas: u32,
    pub timeout_ms: u64,
}

impl Replicated {
    /// `None` when the configuration asks for no waiting.
    pub fn of(config: &Config) -> Option<Self> {
        (config.redis_wait_replicas > 0).then_some(Self {
            replicas: config.redis_wait_replicas,
            timeout_ms: config.redis_wait_timeout_ms,
        })
    }

    /// Appends `WAIT` to `pipe`, right after the write it follows: on a
    /// cluster it names no key, so it joins that write's run and reaches
    /// the same master. Its answer (replicas reached) comes last.
    pub fn append(self, pipe: &mut Pipeline) {
        pipe.cmd("WAIT").arg(self.replicas).arg(self.timeout_ms);
    }

    /// Counts a `WAIT` that reached fewer replicas than asked.
    pub fn note(self, reached: i64, what: &'static str) {
        if reached < i64::from(self.replicas) {
            metrics::counter!("dispatch_redis_wait_short_total", "write" => what).increment(1);
            tracing::warn!(
                reached,
                wanted = self.replicas,
                write = what,
                "a hand-off write reached fewer Redis replicas than redis_wait_replicas"
            );
        }
    }
}

/// A client for `redis_url`: `rediss://` speaks TLS, trusting the
/// system's certificate authorities or, when `redis_tls_ca_file` is set,
/// those of that PEM file only (a private CA, a self-signed certificate);
/// `username:password@` authenticates as an ACL user.
pub fn client(config: &Config) -> Result<redis::Client, redis::RedisError> {
    let url = config.redis_urls().first().copied().unwrap_or_default();
    client_of(config, url)
}

/// A client for each node `redis_url` names (on a cluster, each seed):
/// for what must reach some node when one is down (the timer's wake-up
/// subscription, which a cluster relays from every node).
pub fn clients(config: &Config) -> Result<Vec<redis::Client>, redis::RedisError> {
    config
        .redis_urls()
        .into_iter()
        .map(|url| client_of(config, url))
        .collect()
}

fn client_of(config: &Config, url: &str) -> Result<redis::Client, redis::RedisError> {
    match tls_certificates(config)? {
        None => redis::Client::open(url),
        Some(certificates) => redis::Client::build_with_tls(url, certificates),
    }
}

fn tls_certificates(config: &Config) -> Result<Option<redis::TlsCertificates>, redis::RedisError> {
    let Some(path) = &config.redis_tls_ca_file else {
        return Ok(None);
    };
    let root_cert = std::fs::read(path).map_err(|e| {
        redis::RedisError::from((
            redis::ErrorKind::InvalidClientConfig,
            "cannot read redis_tls_ca_file",
            format!("{path}: {e}"),
        ))
    })?;
    Ok(Some(redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(root_cert),
    }))
}

const CONNECTION_TIMEOUT: Duration = Duration::from_secs(1);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lazily connecting, self-reconnecting, multiplexed connection: to the
/// cluster `redis_url` is a node of with `redis_cluster`, else to it.
pub fn connect(config: &Config) -> Result<Redis, redis::RedisError> {
    if config.redis_cluster {
        let mut builder = redis::cluster::ClusterClientBuilder::new(config.redis_urls())
            .connection_timeout(CONNECTION_TIMEOUT)
            .response_timeout(RESPONSE_TIMEOUT)
            .retries(3);
        if let Some(certificates) = tls_certificates(config)? {
            builder = builder.certs(certificates);
        }
        let client = builder.build()?;
        let connection = client.get_pending_async_connection_with_config(cluster_settings());
        return Ok(Redis::Cluster(Arc::new(Cluster {
            client,
            connection: RwLock::new(connection),
            failures: AtomicU32::new(0),
            rebuilt: Mutex::new(Instant::now()),
        })));
    }
    let settings = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECTION_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(1));
    ConnectionManager::new_lazy_with_config(client(config)?, settings).map(Redis::Standalone)
}

/// Whether the Redis at `redis_url` is a cluster node, when it answers
/// within `wait`: start-up refuses a `redis_cluster` setting that does
/// not match it (commands would fail one by one, later, with `MOVED` or
/// "cluster support disabled").
pub async fn check_mode(config: &Config, wait: Duration) -> Result<(), crate::config::ConfigError> {
    let probe = async {
        let mut conn = client(config)
            .ok()?
            .get_multiplexed_async_connection()
            .await
            .ok()?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut conn)
            .await
            .ok()?;
        Some(info.lines().any(|l| l.trim() == "cluster_enabled:1"))
    };
    let clustered = match tokio::time::timeout(wait, probe).await {
        Ok(Some(clustered)) => clustered,
        // Not reachable now: the connection keeps trying, and the mode is
        // found out then.
        _ => return Ok(()),
    };
    match (config.redis_cluster, clustered) {
        (true, false) => Err(crate::config::ConfigError(
            "redis_cluster is true, but the Redis at redis_url is not a cluster node \
             (cluster_enabled:0): set DISPATCH_REDIS_CLUSTER=false, or point redis_url at a \
             node of the cluster"
                .into(),
        )),
        (false, true) => Err(crate::config::ConfigError(
            "the Redis at redis_url is a Redis Cluster node (cluster_enabled:1), but \
             redis_cluster is false: set DISPATCH_REDIS_CLUSTER=true"
                .into(),
        )),
        _ => Ok(()),
    }
}

/// Whether Redis answers a PING within a second.
pub async fn ping(redis: &Redis) -> bool {
    let mut conn = redis.clone();
    let ping = redis::cmd("PING");
    let check = ping.query_async::<String>(&mut conn);
    matches!(
        tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(_))
    )
}

/// The Redis key layout.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
    /// Whether keys carry hash tags (`redis_cluster`).
    cluster: bool,
    /// `timer_shards` (at least 1).
    timer_shards: usize,
}

impl Keys {
    /// The layout of a standalone Redis under `prefix`.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            cluster: false,
            timer_shards: 1,
        }
    }

    /// The layout `config` asks for: with hash tags on a Redis Cluster.
    pub fn for_config(config: &Config) -> Self {
        Self {
            prefix: config.redis_prefix.clone(),
            cluster: config.redis_cluster,
            timer_shards: config.timer_shards.max(1),
        }
    }

    /// Whether this is a Redis Cluster's layout.
    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// `part` as a hash tag on a cluster (`{part}`: keys that share it
    /// share a slot, so one script may touch them all), as itself on a
    /// standalone Redis, whose keys keep the names they had before
    /// clusters were supported.
    fn tag(&self, part: &str) -> String {
        match self.cluster {
            true => format!("{{{part}}}"),
            false => part.to_owned(),
        }
    }

    /// Hash: `secret_sha256`, `signature_secret`, `created_at_ms`, and
    /// optionally the account's own request rate, `rate_per_sec` and
    /// `rate_burst`.
    pub fn account(&self, api_key: &str) -> String {
        format!("{}:account:{}", self.prefix, self.tag(api_key))
    }

    /// String (integer, µs since the epoch): when the account's request
    /// rate allows its next request (GCRA's theoretical arrival time);
    /// expires once that has passed.
    pub fn account_rate(&self, api_key: &str) -> String {
        format!("{}:account:{}:rate", self.prefix, self.tag(api_key))
    }

    /// Sorted set of the account's application ids, scored by creation time.
    pub fn account_applications(&self, api_key: &str) -> String {
        format!("{}:account:{}:applications", self.prefix, self.tag(api_key))
    }

    /// String: the application record as JSON.
    pub fn application(&self, id: &str) -> String {
        format!("{}:application:{id}", self.prefix)
    }

    /// Hash `{v: version, r: record JSON}` of a workflow (a Messages API
    /// send is a one-step workflow whose id is the message uuid); written
    /// only through [`crate::store::WorkflowStore`].
    pub fn workflow(&self, id: &str) -> String {
        format!("{}:workflow:{}", self.prefix, self.tag(id))
    }

    /// String (integer): workflows started and not yet ended, moved by
    /// each workflow write ([`crate::store::WorkflowStore::write`]); read for the
    /// `dispatch_workflows_in_flight` metric.
    pub fn workflows_in_flight(&self) -> String {
        format!("{}:workflows_in_flight", self.prefix)
    }

    /// String: the dispatch uuid a dispatch's message belongs to, for
    /// `GET /v0.1/messages/{uuid}`.
    pub fn message(&self, message_uuid: &str) -> String {
        format!("{}:message:{}", self.prefix, self.tag(message_uuid))
    }

    /// String: set once a webhook was taken by its receiver, so that a
    /// duplicate job is not delivered again.
    pub fn webhook_delivered(&self, webhook_id: &str) -> String {
        format!("{}:webhook:{}:delivered", self.prefix, self.tag(webhook_id))
    }

    /// String: the token of the notifier delivering this webhook right now,
    /// so that a duplicate job (a redelivery while the first is still out)
    /// waits instead of delivering it a second time.
    pub fn webhook_lock(&self, webhook_id: &str) -> String {
        format!("{}:webhook:{}:lock", self.prefix, self.tag(webhook_id))
    }

    /// List of a webhook's failed attempts (JSON), oldest first.
    pub fn webhook_attempts(&self, webhook_id: &str) -> String {
        format!("{}:webhook:{}:attempts", self.prefix, self.tag(webhook_id))
    }

    /// Hash webhook id → job JSON: an application's dead letters (`scope`
    /// is the application id, or the api key for webhooks of no
    /// application).
    pub fn dead_letters(&self, scope: &str) -> String {
        format!("{}:deadletters:{scope}", self.prefix)
    }

    /// Hash of a webhook endpoint's circuit (`endpoint_id`: see the
    /// notifier's `circuit` module): `state`, `until`, `period`, `token`.
    pub fn circuit(&self, endpoint_id: &str) -> String {
        format!("{}:circuit:{}", self.prefix, self.tag(endpoint_id))
    }

    /// List of the webhooks waiting for an endpoint's circuit to close,
    /// oldest first.
    pub fn circuit_parked(&self, endpoint_id: &str) -> String {
        format!("{}:circuit:{}:parked", self.prefix, self.tag(endpoint_id))
    }

    /// Sorted set of the endpoint ids whose circuit is not closed, scored
    /// by when it opened (for the gauges).
    pub fn circuits(&self) -> String {
        format!("{}:circuits", self.prefix)
    }

    /// Hash endpoint URL → why it is disabled: an application's webhook
    /// endpoints that answered `410 Gone`.
    pub fn disabled_endpoints(&self, application_id: &str) -> String {
        format!("{}:disabled:{application_id}", self.prefix)
    }

    /// Set of `{application_id} {endpoint}` of every disabled endpoint
    /// (for the gauge).
    pub fn disabled_endpoints_all(&self) -> String {
        format!("{}:disabled", self.prefix)
    }

    /// Sorted set of timer entry ids, scored by due time in ms.
    /// (of timer shard `shard`: entries go to `timer_shards` shards, by
    /// their id, so that they spread over a cluster's masters and timers
    /// share the work shard by shard).
    pub fn timer_due(&self, shard: usize) -> String {
        format!("{}:timer:{}due", self.prefix, self.timer_shard(shard))
    }

    /// Hash of timer entry id → entry JSON (routing key and payload), of
    /// timer shard `shard`.
    pub fn timer_entries(&self, shard: usize) -> String {
        format!("{}:timer:{}entries", self.prefix, self.timer_shard(shard))
    }

    /// String: the token of the timer that owns timer shard `shard`, for
    /// `timer_lease_ms` unless renewed.
    pub fn timer_owner(&self, shard: usize) -> String {
        format!("{}:timer:{}owner", self.prefix, self.timer_shard(shard))
    }

    /// Sorted set of the live timers' tokens, scored by their last
    /// heartbeat (ms): how many share the shards.
    pub fn timers(&self) -> String {
        format!("{}:timers", self.prefix)
    }

    /// How many timer shards there are.
    pub fn timer_shards(&self) -> usize {
        self.timer_shards
    }

    /// The timer shard an entry id belongs to (FNV-1a of the id): the same
    /// in every process, so that a cancel finds what a schedule wrote.
    pub fn timer_shard_of(&self, id: &str) -> usize {
        let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
        for byte in id.bytes() {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (hash % self.timer_shards as u64) as usize
    }

    /// What a shard's keys share after `timer:`: on a cluster a hash tag of
    /// their own per shard; on a standalone Redis nothing for shard 0,
    /// whose keys keep the names of before shards, so entries scheduled
    /// before an upgrade still fire.
    fn timer_shard(&self, shard: usize) -> String {
        match (self.cluster, shard) {
            (true, _) => format!("{}:", self.tag(&format!("timer-{shard}"))),
            (false, 0) => String::new(),
            (false, _) => format!("{shard}:"),
        }
    }

    /// Pub/sub channel that wakes timers when an earlier entry is added.
    pub fn timer_wake(&self) -> String {
        format!("{}:timer:wake", self.prefix)
    }

    /// String: the provider's message id, once the provider accepted the
    /// send, so a redelivered send command never calls the provider again.
    pub fn sent(&self, message_uuid: &str) -> String {
        format!("{}:sent:{}", self.prefix, self.tag(message_uuid))
    }

    /// String (integer, µs since the epoch): a provider limit's next free
    /// turn (GCRA, [`crate::rate`]) for sends on `channel` through
    /// `provider` (`*`: any) from `sender` (`*`: every sender together).
    pub fn send_rate(&self, channel: &str, provider: &str, sender: &str) -> String {
        format!("{}:send-rate:{channel}:{provider}:{sender}", self.prefix)
    }

    /// Short lock held by the sender calling the provider for a message.
    pub fn send_lock(&self, message_uuid: &str) -> String {
        format!("{}:sent:{}:lock", self.prefix, self.tag(message_uuid))
    }

    /// String `{workflow_id} {message_uuid}`: whose receipt a provider's
    /// message id is, within the provider record that sent it (`scope`:
    /// [`crate::providers::receipt_scope`]).
    pub fn provider_message(&self, scope: &str, provider_id: &str) -> String {
        format!(
            "{}:provider:{}",
            self.prefix,
            self.tag(&format!("{scope}:{provider_id}"))
        )
    }

    /// List of receipts that arrived before their send was recorded.
    pub fn parked_receipts(&self, scope: &str, provider_id: &str) -> String {
        format!(
            "{}:provider:{}:parked",
            self.prefix,
            self.tag(&format!("{scope}:{provider_id}"))
        )
    }

    /// String `{api_key} {application_id or -}`: who last wrote from our
    /// `ours` to the user `theirs` on `channel`, within `tenant`
    /// ([`crate::providers::send_tenant`]), so that the user's answers
    /// reach that application.
    pub fn conversation(&self, tenant: &str, channel: &str, ours: &str, theirs: &str) -> String {
        let tag = self.tag(&format!("{tenant}:{channel}:{ours}:{theirs}"));
        format!("{}:conversation:{tag}", self.prefix)
    }

    /// The same before conversations had tenants; read, never written.
    pub fn legacy_conversation(&self, channel: &str, ours: &str, theirs: &str) -> String {
        format!("{}:conversation:{channel}:{ours}:{theirs}", self.prefix)
    }

    /// String JSON [`crate::providers::Owner`]: who receives inbound
    /// messages to `number` through shared providers.
    pub fn number(&self, channel: &str, number: &str) -> String {
        format!("{}:number:{channel}:{number}", self.prefix)
    }

    /// Hash channel → provider settings JSON for an account or an
    /// application (`scope` is the api key or the application id).
    pub fn providers(&self, scope: &str) -> String {
        format!("{}:providers:{scope}", self.prefix)
    }

    /// String: JSON of the [`crate::providers::RouteTarget`] a callback
    /// route names.
    pub fn provider_route(&self, route: &str) -> String {
        format!("{}:provider-route:{route}", self.prefix)
    }

    /// String: when (ms) the user `theirs` last wrote to our `ours` on
    /// `channel`, within `tenant`; expires when the channel's reply window
    /// closes.
    pub fn window(&self, tenant: &str, channel: &str, ours: &str, theirs: &str) -> String {
        format!(
            "{}:window:{}",
            self.prefix,
            self.tag(&format!("{tenant}:{channel}:{ours}:{theirs}"))
        )
    }

    /// String `{provider message id} {sent at ms}`: the last message sent
    /// from `ours` to `theirs` on `channel`, for read receipts that name
    /// no message (Messenger's watermarks), through the provider record
    /// `scope` (so a watermark verified by one record reads only its own).
    pub fn last_sent(&self, scope: &str, channel: &str, ours: &str, theirs: &str) -> String {
        format!(
            "{}:last-sent:{scope}:{channel}:{ours}:{theirs}",
            self.prefix
        )
    }

    /// String (JSON): what an `Idempotency-Key` of an account answered,
    /// or is answering (`key_sha256` is the key's SHA-256 in hex, so that
    /// any key fits a key name). Its own slot, with its lease: it is
    /// written before the workflow, never in one script with it.
    pub fn idempotency(&self, api_key: &str, key_sha256: &str) -> String {
        let tag = self.tag(&format!("{api_key}:{key_sha256}"));
        format!("{}:idempotency:{tag}", self.prefix)
    }

    /// String, expiring: present while the request that claimed the key
    /// may still be writing its workflow (`idempotency_lease_ms`). Beside
    /// [`Keys::idempotency`], in its slot.
    pub fn idempotency_lease(&self, api_key: &str, key_sha256: &str) -> String {
        format!("{}:lease", self.idempotency(api_key, key_sha256))
    }

    /// Sorted set of an account's workflow ids scored by acceptance time
    /// (ms): those whose `field` (`to`: a recipient's number or id, `ref`:
    /// a `client_ref`) is `value`, or with `field` `all` every workflow.
    /// For the console's search ([`crate::activity`]). Every search key of
    /// an account shares its slot, so that a workflow's entries are one
    /// run of its first write's pipeline; `value` is hashed, so any value
    /// fits a key name.
    pub fn search(&self, api_key: &str, field: &str, value: &str) -> String {
        let value = crate::activity::digest(value);
        format!(
            "{}:search:{}:{field}:{value}",
            self.prefix,
            self.tag(&format!("account-{api_key}"))
        )
    }

    /// Hash of an account's counters for the minute `minute` (minutes
    /// since the epoch): field → count ([`crate::activity::Stat`]). In the
    /// account's search slot.
    pub fn stats(&self, api_key: &str, minute: i64) -> String {
        format!(
            "{}:stats:{}:{minute}",
            self.prefix,
            self.tag(&format!("account-{api_key}"))
        )
    }

    /// List of every webhook attempt of a workflow (JSON
    /// [`crate::activity::WebhookLog`]), newest last, the latest
    /// [`crate::activity::WEBHOOK_LOG_MAX`] kept. In the record's slot.
    pub fn webhook_log(&self, workflow_id: &str) -> String {
        format!(
            "{}:workflow:{}:webhooks",
            self.prefix,
            self.tag(workflow_id)
        )
    }

    /// String (JSON): a console session, under the SHA-256 of its cookie's
    /// token; expires with the session.
    pub fn console_session(&self, token_sha256: &str) -> String {
        format!("{}:console:session:{}", self.prefix, self.tag(token_sha256))
    }

    /// String (GCRA's next free turn, µs): console sign-ins of one account
    /// or from one client address (`who`: `account:{key}`, `addr:{ip}`).
    pub fn console_sign_in_rate(&self, who: &str) -> String {
        format!("{}:console:sign-in:{}", self.prefix, self.tag(who))
    }

    /// String `claimed` or `abandoned`: whether work whose hand-off had an
    /// unknown outcome runs, or was answered 503 and must not. See
    /// [`crate::store::WorkflowStore::abandon`] and
    /// [`crate::store::WorkflowStore::settle_fate`].
    pub fn fate(&self, id: &str) -> String {
        format!("{}:fate:{}", self.prefix, self.tag(id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_follow_hash_tags() {
        // Values from the Redis Cluster specification's CRC16.
        assert_eq!(crc16_xmodem(b"123456789"), 0x31C3);
        assert_eq!(slot_of(b"foo"), 12182);
        assert_eq!(
            slot_of(b"{user1000}.following"),
            slot_of(b"{user1000}.followers")
        );
        assert_eq!(slot_of(b"x:{a}:y"), slot_of(b"a"));
        assert_eq!(
            slot_of(b"x:{}:y"),
            slot_of(b"x:{}:y"),
            "an empty tag is no tag"
        );
    }

    #[test]
    fn a_pipeline_is_cut_where_its_slot_changes() {
        let mut pipe = redis::pipe();
        pipe.set("message:{m1}", "w").ignore();
        pipe.set("message:{m1}:x", "w").ignore();
        pipe.set("message:{m2}", "w").ignore();
        pipe.publish("wake", 1).ignore();
        pipe.hset("timer:{t}:entries", "e", "j").ignore();
        pipe.zadd("timer:{t}:due", "e", 5).ignore();
        let script = redis::Script::new("return 1");
        pipe.invoke_script(script.key("workflow:{w}").arg(1));
        let runs: Vec<usize> = slot_runs(&pipe).iter().map(Vec::len).collect();
        assert_eq!(runs, [2, 1, 1, 2, 1], "PUBLISH goes by its channel");
    }
}
