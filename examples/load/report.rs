//! The summary table: requests by kind and outcome, rates and valid-request latency.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::Options;
use crate::mix::{Kind, Stats};

pub(crate) fn print_table(
    warm: &Stats,
    stats: &Stats,
    flood: &Stats,
    elapsed: Duration,
    options: &Options,
) {
    let secs = elapsed.as_secs_f64();
    let total = stats.total();
    println!();
    println!(
        "cookiegate load test: {} fast + {} slow workers, {:.1} s, {} requests, {:.0} req/s \
         (warm-up: {} requests in 3 s, not counted below); rate limit {}, glibc malloc {}",
        options.workers,
        options.slow_workers,
        secs,
        total,
        total as f64 / secs,
        warm.total(),
        if options.rate_limit { "on" } else { "off" },
        if options.malloc_fixed {
            "with fixed thresholds (--malloc fixed)"
        } else {
            "defaults"
        }
    );
    println!();
    println!("  {:<28} {:>9}  outcomes", "kind", "requests");
    let mut rows: BTreeMap<Kind, Vec<(String, u64)>> = BTreeMap::new();
    for ((kind, outcome), n) in stats.counts.iter().chain(&flood.counts) {
        rows.entry(*kind).or_default().push((outcome.label(), *n));
    }
    for (kind, outcomes) in &rows {
        let count: u64 = outcomes.iter().map(|(_, n)| n).sum();
        let detail = outcomes
            .iter()
            .map(|(label, n)| format!("{label}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let tag = if kind.is_valid() {
            "valid"
        } else if *kind == Kind::ConnFlood {
            "after"
        } else {
            ""
        };
        println!("  {:<28} {count:>9}  {detail} {tag}", kind.name());
    }
    let mut statuses: BTreeMap<String, u64> = BTreeMap::new();
    for ((_, outcome), n) in &stats.counts {
        *statuses.entry(outcome.label()).or_default() += n;
    }
    println!();
    println!(
        "  all outcomes: {}",
        statuses
            .iter()
            .map(|(label, n)| format!("{label}: {n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let valid: u64 = stats.by_kind(Kind::is_valid).values().sum();
    let mut latency = stats.valid_latency_us.clone();
    latency.sort_unstable();
    let at = |q: f64| {
        latency
            .get(((latency.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0)
    };
    println!(
        "  valid: {valid} requests, {:.0} req/s; latency p50 {} us, p99 {} us, max {} us",
        valid as f64 / secs,
        at(0.5),
        at(0.99),
        latency.last().copied().unwrap_or(0)
    );
}
