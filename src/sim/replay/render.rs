//! A replay as the terminal shows it: per run, the recorded run and the replay side by
//! side — actions (notifications and escalations among them), decisions, the result — and
//! the verdict that sets the exit code.

use std::fmt::Write as _;

use super::{
    compare::{Row, Side},
    ReplayedRun, Report, Verdict,
};

/// Width of each side's column.
const COLUMN: usize = 58;

/// The report as text.
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    for (i, run) in report.runs.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        run_text(&mut out, run, &report.playbooks);
    }
    if let Some(t) = &report.timelines {
        let _ = writeln!(out, "\nINCIDENT TIMELINE");
        let _ = writeln!(
            out,
            "    {:<COLUMN$}   what would happen now",
            "what happened"
        );
        for i in 0..t.recorded.len().max(t.replay.len()) {
            let _ = writeln!(
                out,
                "    {:<COLUMN$} │ {}",
                cell(t.recorded.get(i).map(String::as_str).unwrap_or("")),
                cell(t.replay.get(i).map(String::as_str).unwrap_or(""))
            );
        }
    }
    let _ = writeln!(out, "\n{}", verdict_line(report));
    out
}

fn run_text(out: &mut String, run: &ReplayedRun, playbooks: &str) {
    match (&run.recorded, &run.replay) {
        (Some(rec), _) => {
            let r = &rec.run;
            let _ = writeln!(
                out,
                "replay of run {} — {} ({} {}{}), started {}",
                r.id,
                r.playbook,
                r.event.kind,
                r.event.name,
                if r.dry_run { ", dry run" } else { "" },
                r.started_at.as_deref().unwrap_or("?")
            );
            let _ = writeln!(
                out,
                "  recorded: {}, playbook version {}",
                r.status,
                short(&r.version)
            );
        }
        (None, Some(rep)) => {
            let _ = writeln!(
                out,
                "a run the recorded incident did not have — {} ({} {}), started {}",
                rep.playbook,
                rep.event.kind,
                rep.event.name,
                rep.started_at
                    .map(crate::store::ms_to_rfc3339)
                    .unwrap_or_default()
            );
            let _ = writeln!(out, "  recorded: no such run");
        }
        (None, None) => return,
    }
    match &run.replay {
        Some(rep) => {
            let _ = writeln!(
                out,
                "  replay:   {}{}, playbook version {} from {playbooks}",
                rep.status.as_str(),
                rep.error
                    .as_ref()
                    .map(|e| format!(" ({})", e.message))
                    .unwrap_or_default(),
                short(&rep.version)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  replay:   did not run (the current escalation table did not start it)"
            );
        }
    }
    let f = &run.findings;
    let repeated: usize = f.repeated.values().sum();
    let _ = writeln!(
        out,
        "  reads:    {} recorded; {} answered from the recording, {} answered again with their last answer, {} by the replay's own world",
        run.recorded
            .as_ref()
            .map(|r| r.recording.reads.len())
            .unwrap_or(0),
        f.answered,
        repeated,
        f.asked.len()
    );
    if let Some(cut) = run.recorded.as_ref().and_then(|r| r.recording.cut.as_ref()) {
        let _ = writeln!(
            out,
            "  cut:      the recording was cut after {} reads ({}; {} more not kept){}",
            cut.after_reads,
            cut.why,
            cut.omitted,
            if f.cut_reached {
                format!(
                    "; the replay stopped at the cut and compares the {} action(s) recorded before it",
                    cut.actions_before
                )
            } else {
                String::new()
            }
        );
    }
    for (read, n) in &f.repeated {
        let _ = writeln!(
            out,
            "  note:     {read} asked {n} more time(s) than recorded"
        );
    }
    let _ = writeln!(out, "\n  ACTIONS");
    rows(out, &run.comparison.actions);
    let _ = writeln!(out, "\n  DECISIONS (log)");
    rows(out, &run.comparison.decisions);
    let _ = writeln!(
        out,
        "\n  RESULT    {}",
        if run.comparison.same_result {
            "the same"
        } else {
            "differs"
        }
    );
    if !run.comparison.same_result {
        let show = |v: Option<&serde_json::Value>| {
            v.map(|v| crate::text::truncate(&v.to_string(), 400).into_owned())
                .unwrap_or_else(|| "none".into())
        };
        let _ = writeln!(
            out,
            "    recorded: {}",
            show(run.recorded.as_ref().and_then(|r| r.run.result.as_ref()))
        );
        let _ = writeln!(
            out,
            "    replay:   {}",
            show(run.replay.as_ref().and_then(|x| x.result.as_ref()))
        );
    }
    for m in &f.missing {
        let _ = writeln!(
            out,
            "\n  the new version asks `{}`, which the recorded run never read (--fill default answers it from the default simulated world)",
            m.read
        );
    }
}

fn rows(out: &mut String, rows: &[Row]) {
    if rows.is_empty() {
        let _ = writeln!(out, "    none, in either");
        return;
    }
    let _ = writeln!(out, "    {:<COLUMN$}   replay", "recorded");
    for row in rows {
        let (mark, left, right) = match row.side {
            Side::Both => ('=', row.recorded.as_deref().unwrap_or(""), "(the same)"),
            Side::Recorded => ('-', row.recorded.as_deref().unwrap_or(""), "—"),
            Side::Replay => ('+', "—", row.replay.as_deref().unwrap_or("")),
        };
        let _ = writeln!(out, "  {mark} {:<COLUMN$} │ {}", cell(left), cell(right));
    }
}

/// `text` cut to a column, on a character boundary.
fn cell(text: &str) -> String {
    if text.chars().count() <= COLUMN {
        text.to_string()
    } else {
        let mut s: String = text.chars().take(COLUMN - 1).collect();
        s.push('…');
        s
    }
}

fn short(version: &str) -> &str {
    crate::text::prefix(version, 12)
}

/// The verdict, with what it means for the exit code.
pub fn verdict_line(report: &Report) -> String {
    let differing = report
        .runs
        .iter()
        .filter(|r| r.comparison.verdict != Verdict::Same)
        .count();
    match report.verdict {
        Verdict::Same => format!(
            "VERDICT: the same actions as recorded ({} run(s)) — exit 0",
            report.runs.len()
        ),
        Verdict::Differs => format!(
            "VERDICT: the replay acts differently in {differing} of {} run(s) — exit 1",
            report.runs.len()
        ),
        Verdict::Unrecorded => {
            let reads: Vec<String> = report
                .runs
                .iter()
                .flat_map(|r| r.findings.missing.iter().map(|m| format!("`{}`", m.read)))
                .collect();
            format!(
                "VERDICT: the replay needs reads the recording does not hold ({}) — exit 2",
                reads.join(", ")
            )
        }
    }
}
