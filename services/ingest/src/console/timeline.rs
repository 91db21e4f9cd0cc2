//! A workflow's timeline, drawn to scale: one row per message, from its
//! send to its last status, with a mark for each status, its deadline
//! (and whether it fired), and each webhook attempt about it. The
//! geometry ([`layout`]) is a plain function of the record and the
//! webhook log, tested below; [`draw`] turns it into SVG.

use dispatch_infra::activity::WebhookLog;
use dispatch_model::record::WorkflowRecord;
use maud::{Markup, html};

pub const WIDTH: f64 = 900.0;
const LEFT: f64 = 180.0;
const RIGHT: f64 = 20.0;
const ROW: f64 = 56.0;
const TOP: f64 = 10.0;
const AXIS: f64 = 30.0;

/// Time to x, linearly, over `[start_ms, end_ms]` onto `[left, left +
/// width]`; times outside are drawn at the edges.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Axis {
    pub start_ms: i64,
    pub end_ms: i64,
    pub left: f64,
    pub width: f64,
}

impl Axis {
    pub fn new(start_ms: i64, end_ms: i64, left: f64, width: f64) -> Self {
        Axis {
            start_ms,
            end_ms: end_ms.max(start_ms + 1),
            left,
            width,
        }
    }

    pub fn x(&self, ms: i64) -> f64 {
        let span = (self.end_ms - self.start_ms) as f64;
        let at = (ms.clamp(self.start_ms, self.end_ms) - self.start_ms) as f64;
        self.left + at / span * self.width
    }

    /// Ticks at a round step (1, 2 or 5 times a power of ten of ms, or
    /// minutes, hours), at most `most` of them, from the start; each with
    /// its offset as a label (`+1.5 s`, `+2 min`).
    pub fn ticks(&self, most: usize) -> Vec<(i64, String)> {
        const STEPS: [i64; 20] = [
            1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000,
            300_000, 900_000, 3_600_000, 21_600_000, 86_400_000,
        ];
        let span = self.end_ms - self.start_ms;
        let most = most.max(1) as i64;
        let step = STEPS
            .iter()
            .copied()
            .find(|s| span / s < most)
            .unwrap_or(86_400_000 * (span / most / 86_400_000 + 1));
        (0..=span / step)
            .map(|i| (self.start_ms + i * step, offset(i * step)))
            .collect()
    }
}

/// `+350 ms`, `+1.5 s`, `+2 min`, `+3 h`.
pub fn offset(ms: i64) -> String {
    match ms {
        0 => "0".into(),
        ms if ms < 1_000 => format!("+{ms} ms"),
        ms if ms < 60_000 => format!("+{} s", trim(ms as f64 / 1_000.0)),
        ms if ms < 3_600_000 => format!("+{} min", trim(ms as f64 / 60_000.0)),
        ms => format!("+{} h", trim(ms as f64 / 3_600_000.0)),
    }
}

fn trim(v: f64) -> String {
    let s = format!("{v:.1}");
    s.strip_suffix(".0").map(str::to_owned).unwrap_or(s)
}

/// A point on a row: a status, a webhook attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Mark {
    pub x: f64,
    pub label: String,
    pub class: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub y: f64,
    /// From the send to the row's last event; `None`: never sent.
    pub bar: Option<(f64, f64)>,
    pub statuses: Vec<Mark>,
    /// The deadline's x, whether it fired, and whether it lies beyond the
    /// drawn span (then it is drawn at the right edge).
    pub deadline: Option<(f64, bool, bool)>,
    pub webhooks: Vec<Mark>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Timeline {
    pub axis: Axis,
    pub rows: Vec<Row>,
    /// Webhooks of the workflow as a whole (its final report).
    pub reports: Vec<Mark>,
    pub height: f64,
}

/// The timeline of `record` with its webhook attempts `log`, at `now_ms`
/// (a running workflow is drawn up to now).
pub fn layout(record: &WorkflowRecord, log: &[WebhookLog], now_ms: i64) -> Timeline {
    let start = record.workflow.accepted_at_ms;
    let mut end = record.finished_at_ms.unwrap_or(start);
    for step in &record.steps {
        let times = step
            .history
            .iter()
            .map(|c| c.at_ms)
            .chain(step.sent_at_ms)
            .chain(step.expired_at_ms);
        end = times.fold(end, i64::max);
    }
    end = log.iter().map(|l| l.at_ms).fold(end, i64::max);
    if !record.is_finished() {
        end = end.max(now_ms);
    }
    // A margin, so that the last mark is not on the edge.
    let end = end + ((end - start) / 20).max(1);
    let axis = Axis::new(start, end, LEFT, WIDTH - LEFT - RIGHT);
    let mut rows = Vec::new();
    for (i, step) in record.steps.iter().enumerate() {
        let y = TOP + ROW * i as f64 + ROW / 2.0;
        let channel = step.channel.map(|c| c.as_str()).unwrap_or("?");
        let last = step
            .history
            .iter()
            .map(|c| c.at_ms)
            .chain(step.expired_at_ms)
            .max();
        let running = !record.is_finished() && record.current_step == Some(i);
        let bar = step.sent_at_ms.map(|sent| {
            let until = if running {
                now_ms
            } else {
                last.unwrap_or(sent)
            };
            (axis.x(sent), axis.x(until.max(sent)))
        });
        let statuses = step
            .history
            .iter()
            .map(|c| Mark {
                x: axis.x(c.at_ms),
                label: c.status.as_str().to_owned(),
                class: c.status.as_str().to_owned(),
            })
            .collect();
        let deadline = step
            .deadline_ms
            .map(|due| (axis.x(due), step.expired_at_ms.is_some(), due > axis.end_ms));
        let uuid = step.message_uuid.to_string();
        let webhooks = log
            .iter()
            .filter(|l| l.message_uuid.as_deref() == Some(uuid.as_str()))
            .map(|l| webhook_mark(&axis, l))
            .collect();
        rows.push(Row {
            label: format!("{} · {channel}", i + 1),
            y,
            bar,
            statuses,
            deadline,
            webhooks,
        });
    }
    let reports = log
        .iter()
        .filter(|l| l.message_uuid.is_none())
        .map(|l| webhook_mark(&axis, l))
        .collect();
    let height = TOP + ROW * (record.steps.len() as f64 + 1.0) + AXIS;
    Timeline {
        axis,
        rows,
        reports,
        height,
    }
}

fn webhook_mark(axis: &Axis, l: &WebhookLog) -> Mark {
    let status = l.status.map(|s| format!(" {s}")).unwrap_or_default();
    Mark {
        x: axis.x(l.at_ms),
        label: format!("{} webhook {}{status}", l.kind, l.outcome),
        class: l.outcome.clone(),
    }
}

/// The timeline as SVG.
pub fn draw(t: &Timeline) -> Markup {
    let axis_y = t.height - AXIS;
    let report_y = TOP + ROW * t.rows.len() as f64 + ROW / 2.0;
    let f = |v: f64| format!("{v:.1}");
    html! {
        svg.timeline viewBox=(format!("0 0 {WIDTH} {:.0}", t.height)) role="img" aria-label="Timeline of the workflow" {
            title { "Timeline of the workflow" }
            @for (ms, label) in t.axis.ticks(8) {
                line.grid x1=(f(t.axis.x(ms))) y1=(TOP) x2=(f(t.axis.x(ms))) y2=(f(axis_y)) {}
                text.scale x=(f(t.axis.x(ms))) y=(f(axis_y + 16.0)) text-anchor="middle" { (label) }
            }
            @for row in &t.rows {
                text.row-label x="8" y=(f(row.y + 4.0)) { (row.label) }
                @if let Some((x0, x1)) = row.bar {
                    rect.step x=(f(x0)) y=(f(row.y - 6.0)) width=(f((x1 - x0).max(2.0))) height="12" rx="3" {}
                } @else {
                    text.not-sent x=(f(t.axis.left)) y=(f(row.y + 4.0)) { "not sent" }
                }
                @if let Some((x, fired, beyond)) = row.deadline {
                    line class=(if fired { "deadline fired" } else { "deadline" }) x1=(f(x)) y1=(f(row.y - 18.0)) x2=(f(x)) y2=(f(row.y + 18.0)) {}
                    text.deadline-label x=(f(x)) y=(f(row.y - 20.0)) text-anchor=(if beyond { "end" } else { "middle" }) {
                        @if fired { "deadline fired" } @else if beyond { "deadline later →" } @else { "deadline" }
                    }
                }
                @for m in &row.statuses {
                    circle class=(format!("status {}", m.class)) cx=(f(m.x)) cy=(f(row.y)) r="6" { title { (m.label) } }
                    text.status-label x=(f(m.x)) y=(f(row.y + 22.0)) text-anchor="middle" { (m.label) }
                }
                @for m in &row.webhooks {
                    rect class=(format!("webhook {}", m.class)) x=(f(m.x - 3.0)) y=(f(row.y - 16.0)) width="6" height="6" { title { (m.label) } }
                }
            }
            @if !t.reports.is_empty() {
                text.row-label x="8" y=(f(report_y + 4.0)) { "final report" }
                @for m in &t.reports {
                    rect class=(format!("webhook {}", m.class)) x=(f(m.x - 4.0)) y=(f(report_y - 4.0)) width="8" height="8" { title { (m.label) } }
                }
            }
            line.axis x1=(f(t.axis.left)) y1=(f(axis_y)) x2=(f(t.axis.left + t.axis.width)) y2=(f(axis_y)) {}
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use dispatch_model::envelope::{Step, WorkflowAccepted, WorkflowKind};
    use dispatch_model::record::{MessageStatus, StatusChange, WorkflowStatus};
    use uuid::Uuid;

    pub(crate) fn two_steps() -> WorkflowRecord {
        let step = |channel: &str| Step {
            message_uuid: Uuid::new_v4(),
            message: serde_json::from_value(serde_json::json!({
                "to": {"type": channel, "number": "447700900000"},
                "from": {"type": channel, "number": "447700900001"},
            }))
            .expect("message"),
        };
        let mut r = WorkflowRecord::new(WorkflowAccepted {
            workflow_id: Uuid::new_v4(),
            kind: WorkflowKind::Dispatch,
            account: "a".into(),
            application_id: None,
            accepted_at_ms: 10_000,
            steps: vec![step("whatsapp"), step("sms")],
            trace_id: None,
        });
        let at = |status, at_ms| StatusChange { status, at_ms };
        r.status = WorkflowStatus::Completed;
        r.current_step = Some(1);
        r.finished_at_ms = Some(11_500);
        r.steps[0].sent_at_ms = Some(10_000);
        r.steps[0].history = vec![at(MessageStatus::Submitted, 10_100)];
        r.steps[0].deadline_ms = Some(11_000);
        r.steps[0].expired_at_ms = Some(11_000);
        r.steps[1].sent_at_ms = Some(11_000);
        r.steps[1].history = vec![
            at(MessageStatus::Submitted, 11_100),
            at(MessageStatus::Delivered, 11_500),
        ];
        r
    }

    #[test]
    fn the_axis_is_linear_and_clamped() {
        let axis = Axis::new(1_000, 3_000, 100.0, 400.0);
        assert_eq!(axis.x(1_000), 100.0);
        assert_eq!(axis.x(2_000), 300.0);
        assert_eq!(axis.x(3_000), 500.0);
        assert_eq!(axis.x(0), 100.0, "before the start: at the left edge");
        assert_eq!(axis.x(9_000), 500.0, "after the end: at the right edge");
        let empty = Axis::new(5, 5, 0.0, 10.0);
        assert_eq!(empty.x(5), 0.0, "an empty span does not divide by zero");
    }

    #[test]
    fn ticks_fall_on_round_steps() {
        let axis = Axis::new(0, 1_600, 0.0, 100.0);
        let ticks: Vec<String> = axis.ticks(8).into_iter().map(|(_, l)| l).collect();
        assert_eq!(ticks, ["0", "+500 ms", "+1 s", "+1.5 s"]);
        let long = Axis::new(0, 3 * 3_600_000, 0.0, 100.0).ticks(8);
        assert_eq!(long.len(), 4);
        assert_eq!(long[1].1, "+1 h");
        assert_eq!(offset(90_000), "+1.5 min");
    }

    #[test]
    fn steps_are_drawn_to_scale() {
        let record = two_steps();
        let uuid = record.steps[1].message_uuid.to_string();
        let hook = |at_ms, message_uuid: Option<String>, outcome: &str| WebhookLog {
            webhook_id: "w".into(),
            kind: "message_status".into(),
            message_uuid,
            at_ms,
            status: Some(200),
            latency_ms: 3,
            outcome: outcome.into(),
            error: None,
        };
        let log = vec![
            hook(11_600, Some(uuid), "delivered"),
            hook(11_700, None, "failed"),
        ];
        let t = layout(&record, &log, 99_999);
        // From acceptance to the last webhook, with a 5 % margin.
        assert_eq!(t.axis.start_ms, 10_000);
        assert_eq!(t.axis.end_ms, 11_700 + 85);
        let x = |ms| t.axis.x(ms);
        let first = &t.rows[0];
        assert_eq!(first.label, "1 · whatsapp");
        assert_eq!(
            first.bar,
            Some((x(10_000), x(11_000))),
            "until its deadline"
        );
        assert_eq!(first.deadline, Some((x(11_000), true, false)), "fired");
        assert_eq!(first.statuses.len(), 1);
        let second = &t.rows[1];
        assert_eq!(second.bar, Some((x(11_000), x(11_500))));
        assert_eq!(second.statuses[1].label, "delivered");
        assert_eq!(second.statuses[1].x, x(11_500));
        assert!(second.y > first.y);
        assert_eq!(second.webhooks.len(), 1);
        assert_eq!(second.webhooks[0].x, x(11_600));
        assert_eq!(t.reports.len(), 1, "a webhook of no message: the report");
        assert_eq!(t.reports[0].class, "failed");
        // Proportions hold: the first step took 1000 of the 1785 ms.
        let share = (x(11_000) - x(10_000)) / t.axis.width;
        assert!((share - 1_000.0 / 1_785.0).abs() < 1e-9);
    }

    #[test]
    fn a_running_workflow_reaches_now_and_a_far_deadline_is_at_the_edge() {
        let mut record = two_steps();
        record.status = WorkflowStatus::InProgress;
        record.finished_at_ms = None;
        record.steps[1].history.truncate(1);
        record.steps[1].deadline_ms = Some(10_000 + 86_400_000);
        let t = layout(&record, &[], 12_000);
        assert_eq!(t.axis.end_ms, 12_000 + 100);
        let (x, fired, beyond) = t.rows[1].deadline.expect("a deadline");
        assert!(!fired && beyond);
        assert_eq!(x, t.axis.left + t.axis.width);
        assert_eq!(t.rows[1].bar.map(|b| b.1), Some(t.axis.x(12_000)));
        let svg = draw(&t).into_string();
        assert!(svg.contains("deadline later"));
    }

    #[test]
    fn a_step_never_sent_has_no_bar() {
        let mut record = two_steps();
        record.steps[1] = WorkflowRecord::new(record.workflow.clone()).steps[1].clone();
        let t = layout(&record, &[], 0);
        assert_eq!(t.rows[1].bar, None);
        assert!(draw(&t).into_string().contains("not sent"));
    }
}
