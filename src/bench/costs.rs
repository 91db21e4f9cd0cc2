//! What one completed workflow costs, for `dispatch bench --completed`:
//! CPU time per process, and the messages RabbitMQ took.
//!
//! CPU: the processes are found before the load starts (see
//! [`super::cpu`]) and their CPU time is read exactly at the start and the
//! end of the measured window, while the load is steady; it is divided by
//! the workflows completed (final report `completed` received) in that
//! window, whenever they were posted: what is spent on workflows still in
//! flight at the start evens out against those still in flight at the end.
//! Reading `/proc` costs next to nothing, so it can be done at those
//! moments exactly.
//!
//! Messages: the broker's counters (see [`super::counters`]) are read once
//! before the load starts, when the system is idle, and once after the
//! pipeline has finished what was accepted (before the bench's receiver
//! goes away), and divided by every workflow completed in between. No
//! workflow is cut in two by a reading, so the figure is exact as long as
//! every accepted workflow finished ("accepted but not finished 0"). A
//! reading boots an Erlang VM for the command-line tool (most of a second
//! of CPU), which is why it is not taken inside the window; the first
//! reading also tells, before the load, whether the counters can be read
//! at all.

use std::path::PathBuf;
use std::time::Instant;

use super::counters::{Rabbitmqctl, Reading};
use super::cpu::{Hints, Processes, Sample};

/// Where the processes and the broker's counters are.
pub struct Options {
    pub pids: Vec<(String, u32)>,
    pub rabbitmqctl: Option<PathBuf>,
    pub dev_services_dir: Option<PathBuf>,
}

/// Ready to watch a window: the processes, and the broker's counters as
/// they were before the load (or why they cannot be read).
pub struct Costs {
    processes: Processes,
    ticks_per_sec: u64,
    broker: Result<(Rabbitmqctl, Reading), String>,
}

/// CPU samples on their way.
pub struct Watch {
    costs: Costs,
    cpu: tokio::task::JoinHandle<(Sample, Sample)>,
}

/// Every reading, once the pipeline is done.
pub struct Readings {
    costs: Costs,
    cpu: Result<(Sample, Sample), String>,
    counters: Result<(Reading, Reading), String>,
}

/// The workflows that finished, as the bench's receiver saw them.
pub struct Finished {
    /// When each `completed` final report came in (wall clock, µs).
    pub at_us: Vec<u64>,
    /// Accepted workflows whose final report had not come.
    pub unfinished: usize,
}

/// `DISPATCH_*` settings that a process of the benchmarked system shares
/// with the bench (it was started with the bench's environment).
const SHARED_SETTINGS: [&str; 2] = ["DISPATCH_REDIS_URL", "DISPATCH_REDIS_PREFIX"];

impl Costs {
    /// Finds the processes and reads the broker's counters; call it just
    /// before the load, with the system idle.
    pub async fn prepare(options: Options, config: &dispatch_infra::Config) -> Self {
        let dev_dir = options.dev_services_dir.as_deref();
        let hints = Hints {
            redis_port: url_port(&config.redis_url),
            amqp_port: url_port(config.amqp_urls().first().copied().unwrap_or_default()),
            environment: SHARED_SETTINGS
                .iter()
                .filter_map(|name| Some(format!("{name}={}", std::env::var(name).ok()?)))
                .collect(),
        };
        let broker = match Rabbitmqctl::locate(options.rabbitmqctl, dev_dir, hints.amqp_port) {
            Ok(ctl) => ctl.read().await.map(|reading| (ctl, reading)),
            Err(why) => Err(why),
        };
        Costs {
            processes: Processes::discover(&hints, &options.pids),
            ticks_per_sec: super::cpu::clock_ticks(),
            broker,
        }
    }

    /// Samples CPU time at `start` and `end`.
    pub fn watch(self, start: Instant, end: Instant) -> Watch {
        let processes = self.processes.clone();
        let cpu = tokio::spawn(async move {
            tokio::time::sleep_until(start.into()).await;
            let before = processes.sample();
            tokio::time::sleep_until(end.into()).await;
            (before, processes.sample())
        });
        Watch { costs: self, cpu }
    }

    fn print_cpu(&self, before: &Sample, after: &Sample, finished_us: &[u64]) {
        let completed = completed_between(finished_us, before.at_us, after.at_us);
        let seconds = after.at_us.saturating_sub(before.at_us) as f64 / 1e6;
        if completed == 0 {
            println!("CPU per completed workflow: no workflow completed in the window");
            return;
        }
        let per_workflow_ms =
            |ticks: u64| ticks as f64 * 1000.0 / self.ticks_per_sec as f64 / completed as f64;
        let used = self.processes.used(before, after);
        let mut parts = Vec::new();
        let mut total = 0;
        for (name, ticks) in &used {
            match ticks {
                Some(ticks) => {
                    total += ticks;
                    parts.push(format!("{name} {:.3}", per_workflow_ms(*ticks)));
                }
                None => parts.push(format!("{name} -")),
            }
        }
        println!(
            "CPU ms per completed workflow ({} completed in {seconds:.2} s): {}  total {:.3}",
            super::grouped(completed),
            parts.join("  "),
            per_workflow_ms(total)
        );
        println!("  processes: {}", self.describe_processes(&used));
    }

    /// The pids read under each name; `-` above means none was found, or
    /// one exited during the window.
    fn describe_processes(&self, used: &[(&str, Option<u64>)]) -> String {
        self.processes
            .groups()
            .iter()
            .zip(used)
            .map(|((name, pids), (_, ticks))| {
                let pids: Vec<String> = pids.iter().map(u32::to_string).collect();
                match (pids.is_empty(), ticks) {
                    (true, _) => format!("{name} none found"),
                    (false, None) => format!("{name} {} (exited)", pids.join(",")),
                    (false, Some(_)) => format!("{name} {}", pids.join(",")),
                }
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

impl Watch {
    /// Waits for the CPU samples and reads the broker's counters again;
    /// call it once the pipeline has finished what was accepted.
    pub async fn finish(self) -> Readings {
        let cpu = self.cpu.await.map_err(|e| e.to_string());
        let counters = match &self.costs.broker {
            Ok((ctl, before)) => ctl.read().await.map(|after| (before.clone(), after)),
            Err(why) => Err(why.clone()),
        };
        Readings {
            costs: self.costs,
            cpu,
            counters,
        }
    }
}

impl Readings {
    /// Prints the costs per completed workflow.
    pub fn print(&self, finished: &Finished) {
        match &self.cpu {
            Ok((before, after)) => self.costs.print_cpu(before, after, &finished.at_us),
            Err(why) => println!("CPU per completed workflow: unavailable ({why})"),
        }
        match &self.counters {
            Ok((before, after)) => print_messages(before, after, finished),
            Err(why) => println!("persistent messages per completed workflow: unavailable ({why})"),
        }
    }
}

/// The broker's messages per workflow: those published on confirm
/// channels (every publish of the services is persistent and confirmed),
/// and, beside them, routed and delivered.
fn print_messages(before: &Reading, after: &Reading, finished: &Finished) {
    let completed = completed_between(&finished.at_us, before.at_us, after.at_us);
    let seconds = after.at_us.saturating_sub(before.at_us) as f64 / 1e6;
    if completed == 0 {
        println!("persistent messages per completed workflow: no workflow completed in the window");
        return;
    }
    let increase =
        |counter: &dyn Fn(&Reading) -> u64| counter(after).saturating_sub(counter(before));
    let published = increase(&|r| r.get("amqp091", "messages_received_confirm_total"));
    let routed = increase(&|r| r.get("amqp091", "messages_routed_total"));
    let delivered = increase(&|r| r.sum("amqp091", "messages_delivered_total"));
    let acknowledged = increase(&|r| r.sum("amqp091", "messages_acknowledged_total"));
    let per = |n: u64| n as f64 / completed as f64;
    println!(
        "persistent messages per completed workflow: {:.2} (RabbitMQ messages_received_confirm_total \
         +{} in {seconds:.2} s from idle to done, {} completed); routed {:.2}, delivered {:.2}, acknowledged {:.2}",
        per(published),
        super::grouped(published),
        super::grouped(completed),
        per(routed),
        per(delivered),
        per(acknowledged),
    );
    if finished.unfinished > 0 {
        println!(
            "  (the messages of the {} workflows not finished are counted too: the figure is high)",
            super::grouped(finished.unfinished as u64)
        );
    }
}

fn completed_between(finished_us: &[u64], from: u64, to: u64) -> u64 {
    finished_us.iter().filter(|&&t| t > from && t <= to).count() as u64
}

/// The port of an `amqp://` or `redis://` URL, its scheme's default
/// when none is given.
fn url_port(url: &str) -> Option<u16> {
    let url = url::Url::parse(url).ok()?;
    url.port().or(match url.scheme() {
        "amqp" => Some(5672),
        "amqps" => Some(5671),
        "redis" | "rediss" => Some(6379),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn ports_come_from_the_url_or_its_scheme() {
        use super::url_port;
        assert_eq!(
            url_port("amqp://guest:guest@127.0.0.1:22764/%2f"),
            Some(22764)
        );
        assert_eq!(url_port("amqp://rabbit/%2f"), Some(5672));
        assert_eq!(url_port("redis://127.0.0.1:29694/"), Some(29694));
        assert_eq!(url_port("rediss://cache.example/"), Some(6379));
        assert_eq!(url_port("not a url"), None);
    }

    #[test]
    fn completions_count_between_two_readings() {
        let at = [10, 20, 30, 40];
        assert_eq!(super::completed_between(&at, 10, 30), 2);
        assert_eq!(super::completed_between(&at, 0, 100), 4);
    }
}
