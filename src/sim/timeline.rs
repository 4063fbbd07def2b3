//! The timeline `runbookd simulate` prints: what happened when, on the virtual clock, as
//! text for a person or one JSON object per line.

use std::fmt::Write as _;

use super::{
    driver::{Sim, SimError},
    scenario::Scenario,
};

/// Why the timeline could not be written.
#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Sim(#[from] SimError),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Format(#[from] std::fmt::Error),
}

/// Renders what `sim` did while playing `scenario` from `start_ms`.
pub fn render(
    sim: &Sim,
    scenario: &Scenario,
    start_ms: i64,
    json: bool,
) -> Result<String, TimelineError> {
    let start = start_ms;
    let mut timeline = sim.timeline();
    timeline.sort_by_key(|h| h.at_ms);
    let mut out = String::new();
    if json {
        for h in &timeline {
            writeln!(out, "{}", serde_json::to_string(h)?)?;
        }
        return Ok(out);
    }
    writeln!(out, "{} — simulated on a virtual clock", scenario.title)?;
    if !scenario.description.is_empty() {
        writeln!(out, "{}", scenario.description.trim())?;
    }
    writeln!(out)?;
    for h in &timeline {
        let t = (h.at_ms - start).max(0) / 1000;
        writeln!(
            out,
            "+{:02}:{:02}:{:02}  {:<10}  {}",
            t / 3600,
            t / 60 % 60,
            t % 60,
            h.kind,
            h.text
        )?;
    }
    let runs = sim.runs();
    let failed = runs.iter().filter(|r| r.status != "succeeded").count();
    writeln!(out)?;
    writeln!(
        out,
        "{} runs ({} did not succeed), {} notifications",
        runs.len(),
        failed,
        sim.notifications()?.len()
    )?;
    let page = sim.world.status_page_view();
    for i in page["incidents"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "status page: \"{}\", {}",
            i["name"].as_str().unwrap_or(""),
            i["status"].as_str().unwrap_or("")
        )?;
        for u in i["updates"].as_array().into_iter().flatten() {
            let t = (u["at_ms"].as_i64().unwrap_or(start) - start).max(0) / 1000;
            writeln!(
                out,
                "  +{:02}:{:02}:{:02}  {:<13}  {}",
                t / 3600,
                t / 60 % 60,
                t % 60,
                u["status"].as_str().unwrap_or(""),
                u["body"].as_str().unwrap_or("")
            )?;
        }
    }
    for i in sim.incidents()? {
        writeln!(
            out,
            "incident {}: {}, level {}",
            i.title,
            i.status.as_str(),
            i.level.as_deref().unwrap_or("none")
        )?;
    }
    Ok(out)
}
