//! Named points where a test kills the process, to prove that what was
//! written before them is finished by someone else.
//!
//! `DISPATCH_FAILPOINTS=name[,name…]` arms them. A process that reaches
//! an armed point writes `failpoint {name} hit: {detail}` to standard
//! error and aborts: nothing after the point runs, no destructor, no
//! flush, no graceful stop of the other tasks, as `kill -9` at that
//! instant. Only debug
//! builds (the ones the tests run) look at the variable; in a release
//! build [`hit`] is empty.

/// Kills the process here if `name` is armed.
#[cfg(debug_assertions)]
pub fn hit(name: &str, detail: &dyn std::fmt::Display) {
    use std::io::Write;
    static ARMED: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        std::env::var("DISPATCH_FAILPOINTS")
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    });
    if !ARMED.iter().any(|armed| armed == name) {
        return;
    }
    let mut stderr = std::io::stderr().lock();
    let _ = writeln!(stderr, "failpoint {name} hit: {detail}");
    let _ = stderr.flush();
    std::process::abort();
}

/// Kills the process here if `name` is armed (never, in release builds).
#[cfg(not(debug_assertions))]
#[inline(always)]
pub fn hit(_name: &str, _detail: &dyn std::fmt::Display) {}
