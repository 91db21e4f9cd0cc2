//! RabbitMQ's own message counters, read with `rabbitmqctl eval`.
//!
//! The development broker runs without plugins, so there is no management
//! API; and even where there is one, its totals are refreshed only every
//! `collect_statistics_interval` (5 s), too coarse for a ten-second window.
//! The node's global counters (`rabbit_global_counters`, RabbitMQ 3.9 and
//! later) are live: per protocol, messages received (and those received on
//! confirm channels), routed, confirmed, returned; per queue type,
//! messages delivered and acknowledged. They count every vhost, so they
//! are only the system's own on a broker nothing else uses (the private
//! instances of `scripts/lib/services.sh` are).
//!
//! One `eval` prints the node's clock (`os:system_time`) beside the
//! counters, read together, so that each reading says exactly when it was
//! taken (a command-line tool boots an Erlang VM first, most of a second):
//! the workflows a difference of two readings is divided by are those
//! completed between the two node clocks.
//!
//! Which node and how: with `DISPATCH_DEV_SERVICES_DIR` (exported by
//! `dev_services_up` when it starts both services) the private node of
//! that instance, reached with the environment `_dev_rabbitmq_env` sets
//! (its own `HOME` with the Erlang cookie, node name, private epmd port);
//! otherwise `rabbitmqctl` from `PATH` (or `--rabbitmqctl`) with the
//! bench's environment, as an administrator would run it (which, like any
//! Erlang tool, starts the shared `epmd` on port 4369 if none runs, and
//! leaves it running).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Prints `dispatch-time-us T` and one `dispatch-counter LABELS NAME VALUE`
/// line per counter, LABELS being the key's values joined with `/`
/// (`amqp091`, `amqp091/rabbit_classic_queue`, …).
const EXPRESSION: &str = r#"T = os:system_time(microsecond),
C = rabbit_global_counters:overview(),
L = fun(K) -> string:join([atom_to_list(V) || {_, V} <- K], "/") end,
io:format("dispatch-time-us ~b~n~s", [T,
  [io_lib:format("dispatch-counter ~s ~s ~b~n", [L(K), N, V])
   || {K, Ns} <- maps:to_list(C), {N, V} <- maps:to_list(Ns)]])."#;

/// How long one `rabbitmqctl` may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// One reading of the counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    /// The node's clock when it read them, microseconds since the epoch.
    pub at_us: u64,
    counters: BTreeMap<String, u64>,
}

impl Reading {
    /// A counter, by labels and name (`"amqp091"`,
    /// `"messages_routed_total"`); 0 when the node has no such counter.
    pub fn get(&self, labels: &str, name: &str) -> u64 {
        self.counters
            .get(&format!("{labels} {name}"))
            .copied()
            .unwrap_or(0)
    }

    /// The sum of a counter over every label set that starts with
    /// `labels` (every queue type of a protocol).
    pub fn sum(&self, labels: &str, name: &str) -> u64 {
        self.counters
            .iter()
            .filter(|(key, _)| {
                key.split_once(' ').is_some_and(|(l, n)| {
                    n == name && (l == labels || l.starts_with(&format!("{labels}/")))
                })
            })
            .map(|(_, value)| value)
            .sum()
    }
}

/// How to run `rabbitmqctl` against the broker.
#[derive(Clone)]
pub struct Rabbitmqctl {
    program: PathBuf,
    node: Option<String>,
    /// A private instance's directory: its environment replaces the
    /// bench's `RABBITMQ_*` and `HOME`.
    instance: Option<Instance>,
}

/// What `scripts/lib/services.sh` records about a private node.
#[derive(Clone)]
struct Instance {
    dir: PathBuf,
    state: BTreeMap<String, String>,
}

impl Rabbitmqctl {
    /// The private node of `dev_dir` when given, checked against the AMQP
    /// port the bench is configured with; otherwise `program` (or
    /// `rabbitmqctl` on `PATH`) against its default node.
    pub fn locate(
        program: Option<PathBuf>,
        dev_dir: Option<&Path>,
        amqp_port: Option<u16>,
    ) -> Result<Self, String> {
        let Some(dir) = dev_dir else {
            return Ok(Rabbitmqctl {
                program: program.unwrap_or_else(|| "rabbitmqctl".into()),
                node: None,
                instance: None,
            });
        };
        let instance = Instance::read(dir)?;
        let port = instance.get("AMQP_PORT");
        if let (Some(want), Some(port)) = (amqp_port, port)
            && port != want.to_string()
        {
            return Err(format!(
                "the private RabbitMQ of {} listens on port {port}, but amqp_url names port \
                 {want}",
                dir.display()
            ));
        }
        let sbin = instance
            .get("RABBITMQ_SBIN")
            .ok_or_else(|| format!("{} records no RABBITMQ_SBIN", dir.display()))?;
        Ok(Rabbitmqctl {
            program: program.unwrap_or_else(|| Path::new(sbin).join("rabbitmqctl")),
            node: instance.get("NODE").map(str::to_owned),
            instance: Some(instance),
        })
    }

    /// Reads the counters once; the error says why they are unavailable.
    pub async fn read(&self) -> Result<Reading, String> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .kill_on_drop(true)
            .stdin(std::process::Stdio::null());
        if let Some(instance) = &self.instance {
            instance.apply(&mut command);
        }
        command.arg("-q");
        if let Some(node) = &self.node {
            command.args(["-n", node]);
        }
        command.args(["eval", EXPRESSION]);
        let shown = self.program.display();
        let output = tokio::time::timeout(TIMEOUT, command.output())
            .await
            .map_err(|_| format!("{shown} did not answer within {} s", TIMEOUT.as_secs()))?
            .map_err(|e| format!("cannot run {shown}: {e}"))?;
        let stdout = String::from_utf8_lossy(&output.stdout);
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            let why = first_line(&stderr).or(first_line(&stdout)).unwrap_or("");
            return Err(format!("{shown} eval failed ({}): {why}", output.status));
        }
        parse(&stdout)
    }
}

fn first_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).find(|l| !l.is_empty())
}

impl Instance {
    fn read(dir: &Path) -> Result<Self, String> {
        let path = dir.join("state");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let state = parse_state(&text);
        if !state.contains_key("NODE") {
            return Err(format!("{} records no RabbitMQ node", path.display()));
        }
        Ok(Instance {
            dir: dir.to_owned(),
            state,
        })
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.state.get(key).map(String::as_str)
    }

    /// The environment `_dev_rabbitmq_env` gives the node and its CLI
    /// calls: nothing of the caller's `RABBITMQ_*`, `HOME` holding the
    /// instance's Erlang cookie, the node's files and its private epmd.
    fn apply(&self, command: &mut tokio::process::Command) {
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RABBITMQ_") {
                command.env_remove(&name);
            }
        }
        command.env_remove("NOTIFY_SOCKET");
        let r = self.dir.join("rabbitmq");
        let file = |name: &str| r.join(name).into_os_string();
        let state = |key: &str| self.get(key).unwrap_or_default().to_owned();
        command
            .current_dir(&r)
            .env("HOME", file("home"))
            .env("DISPATCH_DEV_SERVICE", &r)
            .env("RABBITMQ_NODENAME", state("NODE"))
            .env("RABBITMQ_NODE_IP_ADDRESS", "127.0.0.1")
            .env("RABBITMQ_NODE_PORT", state("AMQP_PORT"))
            .env("RABBITMQ_DIST_PORT", state("DIST_PORT"))
            .env("RABBITMQ_MNESIA_BASE", file("mnesia"))
            .env("RABBITMQ_LOG_BASE", file("log"))
            .env("RABBITMQ_PID_FILE", file("rabbitmq.pid"))
            .env("RABBITMQ_CONFIG_FILE", file("rabbitmq.conf"))
            .env("RABBITMQ_CONFIG_FILES", file("conf.d"))
            .env("RABBITMQ_ADVANCED_CONFIG_FILE", file("advanced.config"))
            .env("RABBITMQ_CONF_ENV_FILE", file("rabbitmq-env.conf"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", file("enabled_plugins"))
            .env("ERL_EPMD_PORT", state("EPMD_PORT"))
            .env("ERL_EPMD_ADDRESS", "127.0.0.1");
    }
}

/// The instance's `state` file: `KEY=VALUE` lines, the last one wins.
fn parse_state(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// Reads what [`EXPRESSION`] printed; other lines (`ok`, the value of the
/// expression) are ignored.
fn parse(output: &str) -> Result<Reading, String> {
    let mut at_us = None;
    let mut counters = BTreeMap::new();
    for line in output.lines() {
        let mut words = line.split_whitespace();
        match words.next() {
            Some("dispatch-time-us") => at_us = words.next().and_then(|t| t.parse().ok()),
            Some("dispatch-counter") => {
                let (Some(labels), Some(name), Some(value)) =
                    (words.next(), words.next(), words.next())
                else {
                    continue;
                };
                if let Ok(value) = value.parse() {
                    counters.insert(format!("{labels} {name}"), value);
                }
            }
            _ => {}
        }
    }
    let at_us = at_us.ok_or_else(|| {
        let why = first_line(output).unwrap_or("no output");
        format!("rabbitmqctl eval printed no counters: {why}")
    })?;
    if counters.is_empty() {
        return Err("the node has no global counters (RabbitMQ 3.9 or later needed)".into());
    }
    Ok(Reading { at_us, counters })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OUTPUT: &str = "dispatch-time-us 1796597659578501
dispatch-counter amqp091 messages_received_confirm_total 7012
dispatch-counter amqp091 messages_routed_total 7010
dispatch-counter amqp091/rabbit_classic_queue messages_delivered_total 6000
dispatch-counter amqp091/rabbit_quorum_queue messages_delivered_total 1000
dispatch-counter rabbit_classic_queue/disabled messages_dead_lettered_expired_total 3
ok
";

    #[test]
    fn counters_are_read_by_labels_and_name() {
        let reading = parse(OUTPUT).expect("parsed");
        assert_eq!(reading.at_us, 1_796_597_659_578_501);
        assert_eq!(reading.get("amqp091", "messages_routed_total"), 7010);
        assert_eq!(reading.get("amqp091", "messages_unknown_total"), 0);
        assert_eq!(reading.sum("amqp091", "messages_delivered_total"), 7000);
        assert_eq!(
            reading.sum("amqp091", "messages_received_confirm_total"),
            7012
        );
    }

    #[test]
    fn no_counters_is_an_explained_error() {
        let undefined = "{undef,[{rabbit_global_counters,overview,[],[]}]}";
        let error = parse(undefined).expect_err("no reading");
        assert!(error.contains("undef"), "{error}");
        let error = parse("dispatch-time-us 12\nok\n").expect_err("no counters");
        assert!(error.contains("3.9"), "{error}");
    }

    #[test]
    fn the_last_state_line_wins() {
        let state = parse_state("NODE=a@localhost\nAMQP_PORT=1\nAMQP_PORT=2\n");
        assert_eq!(state.get("AMQP_PORT").map(String::as_str), Some("2"));
        assert_eq!(state.get("NODE").map(String::as_str), Some("a@localhost"));
    }
}
