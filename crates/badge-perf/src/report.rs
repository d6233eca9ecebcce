//! The table's rows, and the Markdown and JSON files they are written to.

use std::path::Path;

use serde_json::{Value, json};

pub(crate) struct Row {
    pub section: String,
    pub figure: String,
    pub limit: String,
    pub ratio: Option<f64>,
    pub goal: String,
    pub met: Option<bool>,
    /// The rate the machine reaches if the server adds nothing to the crypto and the HTTP
    /// ceiling's work: both run on the same cores, so their costs per request add. With the
    /// figure's ratio to it.
    pub bound: Option<(f64, f64)>,
}

pub(crate) fn row(
    section: &str,
    figure: String,
    limit: String,
    ratio: Option<f64>,
    goal: &str,
    met: Option<bool>,
) -> Row {
    Row {
        section: section.into(),
        figure,
        limit,
        ratio,
        goal: goal.into(),
        met,
        bound: None,
    }
}

/// The reachable rate when every request costs one crypto operation (at `crypto` per second
/// on all cores) plus one ceiling request (at `ceiling` per second on all cores).
pub(crate) fn combined_bound(crypto: Option<f64>, ceiling: f64) -> f64 {
    match crypto {
        Some(crypto) => 1.0 / (1.0 / crypto + 1.0 / ceiling),
        None => ceiling,
    }
}

/// A row for a load generator result measured against `limit`, with `goal` the least
/// ratio that meets it, and against `bound`, what the machine can reach at all.
pub(crate) fn throughput_row(
    section: &str,
    alg: &str,
    result: &Value,
    (limit, limit_text): (f64, String),
    goal: f64,
    bound: f64,
) -> Row {
    let rps = result["rps"].as_f64().unwrap_or(0.0);
    let ratio = rps / limit;
    Row {
        section: section.into(),
        figure: format!(
            "{alg} {rps:.0}/s, p50 {} µs, p99 {} µs",
            result["p50_us"], result["p99_us"]
        ),
        limit: limit_text,
        ratio: Some(ratio),
        goal: format!("≥ {goal}"),
        met: Some(ratio >= goal),
        bound: Some((bound, rps / bound)),
    }
}

/// The machine the run measures: cores, CPU model, memory.
pub(crate) fn machine() -> String {
    format!(
        "{} cores, {}, {} MiB, load average {} at the start (a shared machine's figures vary \
         with what else runs)",
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                .split(':')
                .nth(1)
                .unwrap_or("")
                .trim()
                .to_string()))
            .unwrap_or_default(),
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| m
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
            .unwrap_or(0)
            / 1024,
        std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next().map(str::to_string))
            .unwrap_or_else(|| "?".into())
    )
}

/// Writes the table to `out`/latest.md and latest.json, and prints it.
pub(crate) fn write(out: &Path, machine: &str, quick: bool, rows: &[Row]) -> anyhow::Result<()> {
    let mut md = format!(
        "Machine: {machine}. Mode: {}.\n\n| section | figure | limit | ratio | goal | met | bound (ratio) |\n|---|---|---|---|---|---|---|\n",
        if quick { "quick" } else { "full" }
    );
    for r in rows {
        md.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            r.section,
            r.figure,
            r.limit,
            r.ratio.map_or("-".into(), |x| format!("{x:.2}")),
            r.goal,
            r.met.map_or("-", |m| if m { "yes" } else { "no" }),
            r.bound
                .map_or("-".into(), |(bound, ratio)| format!("{bound:.0}/s ({ratio:.2})")),
        ));
    }
    md.push_str(
        "\nbound: the rate reachable if the server added nothing to one crypto operation and one \
         ceiling request, whose costs add on the same cores: 1 / (1/crypto + 1/ceiling).\n",
    );
    println!("{md}");
    std::fs::create_dir_all(out)?;
    std::fs::write(out.join("latest.md"), &md)?;
    let json_rows: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({"section": r.section, "figure": r.figure, "limit": r.limit, "ratio": r.ratio,
                "goal": r.goal, "met": r.met, "bound": r.bound.map(|b| b.0), "bound_ratio": r.bound.map(|b| b.1)})
        })
        .collect();
    std::fs::write(
        out.join("latest.json"),
        serde_json::to_vec_pretty(&json!({"machine": machine, "quick": quick, "rows": json_rows}))?,
    )?;
    Ok(())
}
