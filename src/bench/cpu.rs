//! CPU time of the processes a benchmark exercises, read from `/proc`.
//!
//! Each process is found by its command line, once, before the load
//! starts: RabbitMQ (`beam.smp`, not the VMs of its command-line tools),
//! Redis (`redis-server`), the services (`dispatch all`, `ingest`,
//! `workflow`, `sender`, `timer`, `notifier`), the simulator (`dispatch
//! provider-sim`), and the bench itself. Only processes of the bench's own
//! user are considered. Several processes under one name are summed.
//!
//! A machine may run more than one system (a test suite's private
//! RabbitMQ and Redis beside the benchmarked ones); where the bench can
//! tell which one it talks to, it keeps only those: the RabbitMQ that
//! listens on the configured AMQP port, the Redis whose title names the
//! configured port, the `dispatch` processes started with the bench's own
//! `DISPATCH_REDIS_URL` and `DISPATCH_REDIS_PREFIX`. When that leaves
//! nothing (a broker elsewhere, services started otherwise), every
//! candidate counts. `--pids` overrides it all: a process given there
//! counts under its name only.
//!
//! A process's CPU time is `utime + stime` of `/proc/<pid>/stat`, in clock
//! ticks (`getconf CLK_TCK`, 100 when that fails): user and system time of
//! all its threads.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The names figures are printed under, in this order; names given only
/// with `--pids` follow.
const NAMES: [&str; 5] = ["rabbitmq", "redis", "dispatch", "simulator", "bench"];

/// `dispatch` subcommands that are services of the system under test.
const SERVICES: [&str; 6] = ["all", "ingest", "workflow", "sender", "timer", "notifier"];

/// What tells this system's processes from other systems' on the machine.
#[derive(Default)]
pub struct Hints {
    /// The configured Redis port.
    pub redis_port: Option<u16>,
    /// The configured AMQP port.
    pub amqp_port: Option<u16>,
    /// `NAME=value` pairs a `dispatch` process's environment must hold.
    pub environment: Vec<String>,
}

/// Processes by name, in printing order.
#[derive(Clone)]
pub struct Processes {
    groups: Vec<(String, Vec<u32>)>,
}

impl Processes {
    /// Finds the processes by scanning `/proc`; `overrides` (`--pids`)
    /// replace what was found for their names.
    pub fn discover(hints: &Hints, overrides: &[(String, u32)]) -> Self {
        let mut groups = found(hints);
        override_with(&mut groups, overrides);
        Processes { groups }
    }

    pub fn groups(&self) -> &[(String, Vec<u32>)] {
        &self.groups
    }

    /// Every process's CPU time now.
    pub fn sample(&self) -> Sample {
        let ticks = self
            .groups
            .iter()
            .flat_map(|(_, pids)| pids.iter().copied())
            .filter_map(|pid| Some((pid, cpu_ticks(pid)?)))
            .collect();
        Sample {
            at_us: super::wall_clock_us(),
            ticks,
        }
    }

    /// CPU ticks each name used between two samples; `None` for a name
    /// with no process, or one that was not running at both samples.
    pub fn used(&self, before: &Sample, after: &Sample) -> Vec<(&str, Option<u64>)> {
        self.groups
            .iter()
            .map(|(name, pids)| {
                let ticks: Option<Vec<u64>> = pids
                    .iter()
                    .map(|pid| {
                        let (a, b) = (before.ticks.get(pid)?, after.ticks.get(pid)?);
                        Some(b.saturating_sub(*a))
                    })
                    .collect();
                let ticks = ticks.filter(|t| !t.is_empty()).map(|t| t.iter().sum());
                (name.as_str(), ticks)
            })
            .collect()
    }
}

/// What a scan of `/proc` finds under each of [`NAMES`].
fn found(hints: &Hints) -> Vec<(String, Vec<u32>)> {
    let mut found: BTreeMap<&'static str, Vec<Candidate>> = BTreeMap::new();
    for candidate in candidates() {
        if let Some(name) = classify(&candidate.argv) {
            found.entry(name).or_default().push(candidate);
        }
    }
    NAMES
        .iter()
        .map(|&name| {
            let pids = match name {
                "bench" => vec![std::process::id()],
                _ => narrow(name, found.remove(name).unwrap_or_default(), hints),
            };
            (name.to_owned(), pids)
        })
        .collect()
}

/// Applies `--pids`: a name given there has exactly the processes given
/// for it, and a process given there counts under no other name.
fn override_with(groups: &mut Vec<(String, Vec<u32>)>, overrides: &[(String, u32)]) {
    for (_, pids) in groups.iter_mut() {
        pids.retain(|pid| !overrides.iter().any(|(_, chosen)| chosen == pid));
    }
    for (name, _) in overrides {
        match groups.iter_mut().find(|(n, _)| n == name) {
            Some((_, pids)) => pids.clear(),
            None => groups.push((name.clone(), Vec::new())),
        }
    }
    for (name, pid) in overrides {
        if let Some((_, pids)) = groups.iter_mut().find(|(n, _)| n == name) {
            pids.push(*pid);
        }
    }
}

/// CPU time of a set of processes at one moment.
pub struct Sample {
    /// Wall-clock time of the sample, microseconds since the epoch.
    pub at_us: u64,
    ticks: BTreeMap<u32, u64>,
}

/// Clock ticks per second, the unit of `/proc/<pid>/stat`'s times.
pub fn clock_ticks() -> u64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok())
        .and_then(|text| text.trim().parse().ok())
        .filter(|&ticks| ticks > 0)
        .unwrap_or(100)
}

/// Parses `--pids`: `name=pid,name=pid`.
pub fn parse_pid(value: &str) -> Result<(String, u32), String> {
    let (name, pid) = value
        .split_once('=')
        .ok_or_else(|| format!("{value}: must be name=pid"))?;
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("{value}: {pid} is not a process id"))?;
    Ok((name.trim().to_owned(), pid))
}

fn cpu_ticks(pid: u32) -> Option<u64> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// `utime + stime` from the text of `/proc/<pid>/stat`. The command name
/// (field 2, in parentheses) may hold spaces and parentheses, so fields
/// are counted from the last `)`: what follows starts at field 3, the
/// state, and utime and stime are fields 14 and 15.
fn parse_stat(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// A process of ours, by its command line.
struct Candidate {
    pid: u32,
    argv: Vec<String>,
}

/// The current user's processes, other than this one.
fn candidates() -> Vec<Candidate> {
    let Ok(me) = std::fs::metadata("/proc/self") else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let owner = entry.metadata().ok()?.uid();
            if owner != me.uid() || pid == std::process::id() {
                return None;
            }
            let argv = split_cmdline(&std::fs::read(entry.path().join("cmdline")).ok()?);
            Some(Candidate { pid, argv })
        })
        .collect()
}

/// `/proc/<pid>/cmdline`: arguments separated (and ended) by NULs. Redis
/// rewrites its argv into one title padded with NULs, so empty arguments
/// are dropped.
fn split_cmdline(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// Which part of the system a command line is, if any.
fn classify(argv: &[String]) -> Option<&'static str> {
    let first = argv.first()?;
    let program = first.split_whitespace().next()?;
    let program = Path::new(program).file_name()?.to_str()?;
    match program {
        // rabbitmqctl and friends run in a VM of their own (an escript).
        "beam.smp" if !argv.iter().any(|a| a == "escript") => Some("rabbitmq"),
        "redis-server" => Some("redis"),
        "dispatch" => match subcommand(&argv[1..])? {
            "provider-sim" => Some("simulator"),
            command if SERVICES.contains(&command) => Some("dispatch"),
            _ => None,
        },
        _ => None,
    }
}

/// The first argument that is neither an option nor the value of the
/// global `--config`.
fn subcommand(args: &[String]) -> Option<&str> {
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        if arg == "--config" {
            args.next();
        } else if !arg.starts_with('-') {
            return Some(arg);
        }
    }
    None
}

/// Keeps the candidates that belong to this system, when that can be
/// told; all of them otherwise.
fn narrow(name: &str, found: Vec<Candidate>, hints: &Hints) -> Vec<u32> {
    let ours: Vec<u32> = found
        .iter()
        .filter(|c| belongs(name, c, hints))
        .map(|c| c.pid)
        .collect();
    if ours.is_empty() {
        found.iter().map(|c| c.pid).collect()
    } else {
        ours
    }
}

fn belongs(name: &str, candidate: &Candidate, hints: &Hints) -> bool {
    match name {
        "redis" => hints.redis_port.is_some_and(|port| {
            let title = candidate.argv.join(" ");
            title.contains(&format!(":{port} ")) || title.ends_with(&format!(":{port}"))
        }),
        "rabbitmq" => hints
            .amqp_port
            .is_some_and(|port| listens_on(candidate.pid, port)),
        _ => {
            !hints.environment.is_empty()
                && std::fs::read(format!("/proc/{}/environ", candidate.pid)).is_ok_and(|raw| {
                    let environment = split_cmdline(&raw);
                    hints
                        .environment
                        .iter()
                        .all(|pair| environment.contains(pair))
                })
        }
    }
}

/// Whether `pid` holds a socket listening on TCP `port` (any address):
/// the inodes of `/proc/net/tcp` and `tcp6` listeners against the
/// process's open descriptors.
fn listens_on(pid: u32, port: u16) -> bool {
    let inodes: Vec<String> = ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|table| std::fs::read_to_string(table).ok())
        .flat_map(|table| listener_inodes(&table, port))
        .map(|inode| format!("socket:[{inode}]"))
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path())
            .is_ok_and(|target| inodes.iter().any(|i| Path::new(i) == target))
    })
}

/// Inodes of the sockets listening on `port` in a `/proc/net/tcp` table:
/// `sl local_address rem_address st … inode`, the address as hex
/// `IP:PORT`, state `0A` for LISTEN.
fn listener_inodes(table: &str, port: u16) -> Vec<u64> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (_, local_port) = fields.get(1)?.rsplit_once(':')?;
            let listening = *fields.get(3)? == "0A";
            if !listening || u16::from_str_radix(local_port, 16).ok()? != port {
                return None;
            }
            fields.get(9)?.parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn stat_times_are_counted_after_the_command_name() {
        let stat = "4242 (tokio (rt) 1) S 1 4242 4242 0 -1 4194560 9501 0 3 0 \
                    1234 567 0 0 20 0 9 0 965468 123 456 18446744073709551615";
        assert_eq!(parse_stat(stat), Some(1234 + 567));
        assert_eq!(parse_stat("12 (short) S 1 2"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
    }

    #[test]
    fn command_lines_name_the_parts_of_the_system() {
        let server = argv(&[
            "/usr/lib/erlang/bin/beam.smp",
            "-W",
            "w",
            "--",
            "-s",
            "rabbit",
            "boot",
        ]);
        let cli = argv(&["/usr/lib/erlang/bin/beam.smp", "-run", "escript", "start"]);
        assert_eq!(classify(&server), Some("rabbitmq"));
        assert_eq!(classify(&cli), None);
        assert_eq!(
            classify(&argv(&["redis-server 127.0.0.1:29694"])),
            Some("redis")
        );
        assert_eq!(
            classify(&argv(&["target/release/dispatch", "all"])),
            Some("dispatch")
        );
        assert_eq!(
            classify(&argv(&[
                "dispatch",
                "--config",
                "all",
                "sender",
                "--channel",
                "sms"
            ])),
            Some("dispatch")
        );
        assert_eq!(
            classify(&argv(&["./dispatch", "provider-sim"])),
            Some("simulator")
        );
        assert_eq!(classify(&argv(&["dispatch", "bench", "--completed"])), None);
        assert_eq!(classify(&argv(&["dispatcher", "all"])), None);
    }

    #[test]
    fn redis_rewrites_its_command_line_into_one_title() {
        let raw = b"redis-server 127.0.0.1:29694\0\0\0\0";
        assert_eq!(split_cmdline(raw), vec!["redis-server 127.0.0.1:29694"]);
    }

    #[test]
    fn listeners_are_found_by_port() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:58CC 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 310088 1 0000000000000000 100 0 0 10 0
   1: 0100007F:58CC 0100007F:D2F0 01 00000000:00000000 00:00000000 00000000     0        0 310099 1 0000000000000000 20 4 30 10 -1
   2: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 340 1 0000000000000000 100 0 0 10 0";
        assert_eq!(listener_inodes(table, 22732), vec![310088]);
        assert_eq!(listener_inodes(table, 2024), vec![340]);
        assert!(listener_inodes(table, 5672).is_empty());
    }

    #[test]
    fn given_pids_replace_found_ones() {
        let mut groups = vec![
            ("rabbitmq".to_owned(), vec![10, 11]),
            ("dispatch".to_owned(), vec![20, 21]),
            ("simulator".to_owned(), vec![30]),
        ];
        let given = [
            ("rabbitmq".to_owned(), 11),
            ("dispatch".to_owned(), 30),
            ("dispatch".to_owned(), 20),
            ("receiver".to_owned(), 40),
        ];
        override_with(&mut groups, &given);
        let expected = vec![
            ("rabbitmq".to_owned(), vec![11]),
            ("dispatch".to_owned(), vec![30, 20]),
            ("simulator".to_owned(), vec![]),
            ("receiver".to_owned(), vec![40]),
        ];
        assert_eq!(groups, expected);
    }

    #[test]
    fn pids_are_name_equals_number() {
        assert_eq!(parse_pid("redis=42"), Ok(("redis".to_owned(), 42)));
        assert!(parse_pid("redis").is_err());
        assert!(parse_pid("redis=x").is_err());
    }
}
