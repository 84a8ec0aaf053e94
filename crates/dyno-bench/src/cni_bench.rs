//! `dyno bench cni`: the `dyno-cni` plugin against Debian's CNI `ptp` + `host-local`, both
//! called as a container runtime calls a plugin (spawn → exit, configuration on stdin, result
//! from stdout), each in its own fresh lab ([`cni`]).
//!
//! The report is a list of [`Section`]s, each printed as soon as it is measured and each adding
//! its pairs to the one `key=value` line printed last. The plugin section is the first; more
//! timings (such as a podman end-to-end section) are further sections added in [`run`].

use std::path::PathBuf;

use clap::Args;

use dyno_net::lab::Lab;

use super::cni::{self, CniTimings};
use super::podman::{self, RunTimings};
use super::stats::{ms_text, ratio_text, summarize, Summary};

/// The goal for ADD: dyno-cni at least this many times faster than ptp + host-local (p50).
const ADD_TARGET_RATIO: f64 = 10.0;

#[derive(Args)]
#[command(
    after_help = "How: ADD for N containers (each a fresh network namespace made \
    beforehand, untimed; all kept), then DEL for each, timed from the plugin's spawn to its \
    exit, as a runtime waits for it. First with ptp + host-local (the anchor), then with \
    dyno-cni (so any kernel clean-up after the anchor's run counts against dyno-cni), each in \
    its own throwaway lab namespace standing in for the host: nothing touches the real host's \
    network. dyno-cni's configuration: subnet 10.218.0.0/16, no port, leases in the run's \
    scratch directory; after its DELs no dy* link and no lease may be left. Ratios are \
    ptp / dyno-cni: how many times faster dyno-cni is. Target: ADD at least 10x faster (p50). \
    Percentiles are nearest-rank.\n\nThe last line is key=value pairs: count \
    dyno_add_p50_ms dyno_add_p99_ms dyno_del_p50_ms dyno_del_p99_ms ptp_add_p50_ms \
    ptp_add_p99_ms ptp_del_p50_ms ptp_del_p99_ms add_ratio_p50 add_ratio_p99 del_ratio_p50 \
    del_ratio_p99 add_target_ratio add_target_met (yes/no) dyno_version_p50_ms \
    dyno_version_p99_ms dyno_add_work_p50_ms (ADD p50 minus VERSION p50: the spawn of a plugin \
    that does nothing, timed the same way), then with --podman-rounds: \
    podman_dyno_p50_ms podman_dyno_p99_ms podman_ptp_p50_ms podman_ptp_p99_ms \
    podman_ratio_p50"
)]
pub struct CniBench {
    /// How many containers: ADD for all of them (kept), then DEL for all
    #[arg(long, default_value_t = 100)]
    count: usize,
    /// Where Debian's CNI plugins are (ptp and host-local: apt-get install
    /// containernetworking-plugins)
    #[arg(long, default_value = "/usr/lib/cni")]
    cni_dir: PathBuf,
    /// The dyno-cni binary [default: dyno-cni next to this dyno binary, as `cargo build
    /// --release` leaves it in target/release]
    #[arg(long)]
    plugin: Option<PathBuf>,
    /// Rounds of `podman run --rm IMAGE true` on a dyno-cni network and on a ptp network,
    /// alternated, in a throwaway podman (apt-get install podman runc busybox-static); 0
    /// skips podman
    #[arg(long, default_value_t = 20)]
    podman_rounds: usize,
}

/// One part of the report: its human lines, and its pairs for the last line.
#[derive(Debug, Default)]
pub(crate) struct Section {
    lines: Vec<String>,
    pairs: Vec<(String, String)>,
}

impl Section {
    pub(crate) fn line(&mut self, line: impl Into<String>) {
        self.lines.push(line.into());
    }

    pub(crate) fn pair(&mut self, key: &str, value: impl Into<String>) {
        self.pairs.push((key.to_owned(), value.into()));
    }
}

/// The sections so far; [`Report::finish`] prints the `key=value` line of all their pairs.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pairs: Vec<(String, String)>,
}

impl Report {
    /// Prints the section's lines now (a long run shows what it has) and keeps its pairs.
    pub(crate) fn add(&mut self, section: Section) {
        for line in &section.lines {
            println!("{line}");
        }
        self.pairs.extend(section.pairs);
    }

    pub(crate) fn finish(self) {
        println!("{}", key_values(&self.pairs));
    }
}

fn key_values(pairs: &[(String, String)]) -> String {
    let line: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    line.join(" ")
}

pub fn run(args: CniBench) -> Result<(), String> {
    if args.count == 0 {
        return Err("--count must be at least 1".into());
    }
    // Before anything runs: a missing plugin is reported without a measurement half done.
    let plugin = cni::find_dyno_cni(args.plugin.as_deref()).map_err(|e| e.to_string())?;
    let ptp = cni::run_ptp_anchor(args.count, &args.cni_dir)
        .map_err(|e| format!("CNI ptp anchor: {e}"))?;
    let dyno = cni::run_dyno_cni(args.count, &plugin).map_err(|e| format!("dyno-cni: {e}"))?;
    let version = cni::time_version_calls(args.count, &plugin)
        .map_err(|e| format!("dyno-cni VERSION: {e}"))?;
    let mut report = Report::default();
    report.add(plugin_section(args.count, &plugin, &dyno, &ptp));
    report.add(floor_section(&version, &dyno));
    if args.podman_rounds > 0 {
        let lab = Lab::new("bench-podman").map_err(|e| format!("lab for podman: {e}"))?;
        let runs = podman::time_dyno_against_ptp(lab.host.netns(), &plugin, args.podman_rounds)
            .map_err(|e| format!("podman: {e}"))?;
        report.add(podman_section(&runs));
    }
    // Further sections of timings are measured and added here, before the key=value line.
    report.finish();
    Ok(())
}

/// The four summaries and their ratios.
fn plugin_section(
    count: usize,
    plugin: &std::path::Path,
    dyno: &CniTimings,
    ptp: &CniTimings,
) -> Section {
    let dyno_add = summarize(&dyno.add);
    let dyno_del = summarize(&dyno.del);
    let ptp_add = summarize(&ptp.add);
    let ptp_del = summarize(&ptp.del);
    let mut s = Section::default();
    s.line(format!(
        "CNI plugins, {count} containers: ADD for each (all kept), then DEL for each; \
         spawn → exit per call; dyno-cni is {}",
        plugin.display()
    ));
    for (who, what, summary) in [
        ("ptp + host-local", "ADD", &ptp_add),
        ("ptp + host-local", "DEL", &ptp_del),
        ("dyno-cni", "ADD", &dyno_add),
        ("dyno-cni", "DEL", &dyno_del),
    ] {
        s.line(format!(
            "{who:<16} {what}  p50 {:.3} ms  p99 {:.3} ms  mean {:.3} ms  max {:.3} ms",
            summary.p50_ms, summary.p99_ms, summary.mean_ms, summary.max_ms
        ));
    }
    let met = dyno_add.p50_ms > 0.0 && ptp_add.p50_ms / dyno_add.p50_ms >= ADD_TARGET_RATIO;
    s.line(format!(
        "dyno-cni ADD {}x faster than ptp at p50, {}x at p99 (target: at least {ADD_TARGET_RATIO}x \
         at p50: {})",
        ratio_text(ptp_add.p50_ms, dyno_add.p50_ms),
        ratio_text(ptp_add.p99_ms, dyno_add.p99_ms),
        if met { "met" } else { "NOT met" }
    ));
    s.line(format!(
        "dyno-cni DEL {}x faster than ptp at p50, {}x at p99",
        ratio_text(ptp_del.p50_ms, dyno_del.p50_ms),
        ratio_text(ptp_del.p99_ms, dyno_del.p99_ms),
    ));
    s.pair("count", count.to_string());
    for (prefix, add, del) in [("dyno", &dyno_add, &dyno_del), ("ptp", &ptp_add, &ptp_del)] {
        push_summary(&mut s, &format!("{prefix}_add"), add);
        push_summary(&mut s, &format!("{prefix}_del"), del);
    }
    s.pair("add_ratio_p50", ratio_text(ptp_add.p50_ms, dyno_add.p50_ms));
    s.pair("add_ratio_p99", ratio_text(ptp_add.p99_ms, dyno_add.p99_ms));
    s.pair("del_ratio_p50", ratio_text(ptp_del.p50_ms, dyno_del.p50_ms));
    s.pair("del_ratio_p99", ratio_text(ptp_del.p99_ms, dyno_del.p99_ms));
    s.pair("add_target_ratio", format!("{ADD_TARGET_RATIO:.0}"));
    s.pair("add_target_met", if met { "yes" } else { "no" });
    s
}

/// What ADD costs beyond being started: the same spawn of dyno-cni for VERSION, which does
/// nothing. With ptp's ADD near 8 ms, a 10x ADD would have to fit in about this floor.
fn floor_section(version: &[std::time::Duration], dyno: &CniTimings) -> Section {
    let floor = summarize(version);
    let add = summarize(&dyno.add);
    let mut s = Section::default();
    s.line(format!(
        "dyno-cni VERSION (spawned the same way, no work: the floor of any call) p50 {:.3} ms  \
         p99 {:.3} ms; ADD's own work at p50: {:.3} ms",
        floor.p50_ms,
        floor.p99_ms,
        add.p50_ms - floor.p50_ms
    ));
    push_summary(&mut s, "dyno_version", &floor);
    s.pair("dyno_add_work_p50_ms", ms_text(add.p50_ms - floor.p50_ms));
    s
}

/// `podman run --rm … true` end to end on each network, and the ratio (ptp / dyno-cni: above
/// 1 means faster on dyno-cni).
fn podman_section(runs: &RunTimings) -> Section {
    let dyno = summarize(&runs.dyno);
    let ptp = summarize(&runs.ptp);
    let mut s = Section::default();
    s.line(format!(
        "podman run --rm IMAGE true, {} rounds alternated, runc, a throwaway podman root:",
        runs.dyno.len()
    ));
    for (who, summary) in [("--network ptp", &ptp), ("--network dyno", &dyno)] {
        s.line(format!(
            "{who:<16} p50 {:.1} ms  p99 {:.1} ms  mean {:.1} ms",
            summary.p50_ms, summary.p99_ms, summary.mean_ms
        ));
    }
    s.line(format!(
        "podman run on dyno-cni: {}x the speed of ptp at p50 (ptp / dyno-cni)",
        ratio_text(ptp.p50_ms, dyno.p50_ms)
    ));
    push_summary(&mut s, "podman_dyno", &dyno);
    push_summary(&mut s, "podman_ptp", &ptp);
    s.pair("podman_ratio_p50", ratio_text(ptp.p50_ms, dyno.p50_ms));
    s
}

fn push_summary(s: &mut Section, prefix: &str, summary: &Summary) {
    s.pair(&format!("{prefix}_p50_ms"), ms_text(summary.p50_ms));
    s.pair(&format!("{prefix}_p99_ms"), ms_text(summary.p99_ms));
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::*;

    fn timings(add_ms: u64, del_ms: u64) -> CniTimings {
        CniTimings {
            add: (1..=10)
                .map(|i| Duration::from_millis(add_ms * i))
                .collect(),
            del: (1..=10)
                .map(|i| Duration::from_millis(del_ms * i))
                .collect(),
        }
    }

    #[test]
    fn plugin_section_ratios_are_ptp_over_dyno() {
        let s = plugin_section(
            10,
            Path::new("/x/dyno-cni"),
            &timings(1, 2),
            &timings(12, 5),
        );
        let line = key_values(&s.pairs);
        assert_eq!(
            line,
            "count=10 dyno_add_p50_ms=5.000 dyno_add_p99_ms=10.000 dyno_del_p50_ms=10.000 \
             dyno_del_p99_ms=20.000 ptp_add_p50_ms=60.000 ptp_add_p99_ms=120.000 \
             ptp_del_p50_ms=25.000 ptp_del_p99_ms=50.000 add_ratio_p50=12.00 add_ratio_p99=12.00 \
             del_ratio_p50=2.50 del_ratio_p99=2.50 add_target_ratio=10 add_target_met=yes"
        );
        assert!(
            s.lines
                .iter()
                .any(|l| l.contains("ADD 12.00x faster than ptp at p50")
                    && l.ends_with("at least 10x at p50: met)")),
            "{:?}",
            s.lines
        );
        let slow = plugin_section(10, Path::new("/x"), &timings(2, 2), &timings(12, 5));
        assert!(key_values(&slow.pairs).ends_with("add_target_met=no"));
        assert!(slow.lines.iter().any(|l| l.contains("NOT met")));
    }

    #[test]
    fn floor_section_is_version_and_adds_own_work() {
        let version: Vec<Duration> = (1..=10).map(Duration::from_millis).collect();
        let s = floor_section(&version, &timings(2, 2));
        assert_eq!(
            key_values(&s.pairs),
            "dyno_version_p50_ms=5.000 dyno_version_p99_ms=10.000 dyno_add_work_p50_ms=5.000"
        );
    }

    #[test]
    fn report_sections_add_up() {
        let mut report = Report::default();
        let mut a = Section::default();
        a.pair("count", "3");
        let mut b = Section::default();
        b.line("a later section");
        b.pair("later_p50_ms", "1.000");
        report.add(a);
        report.add(b);
        assert_eq!(key_values(&report.pairs), "count=3 later_p50_ms=1.000");
    }
}
