//! What `dyno bench build` prints: per way, each step of a round as seconds from the
//! command's start (median, min, max over the rounds), the build's time and share, the
//! anchors, the ratios; then the `key=value` line.

use std::time::Duration;

use crate::stats::median_min_max;

use super::round::{Timeline, LIST_EVERY, POLL_EVERY};
use super::{BuildBench, Figures};

/// One step of a round, read from its timeline.
type Step = fn(&Timeline) -> Duration;

pub(super) fn print(args: &BuildBench, f: &Figures) {
    println!(
        "{} (one file changed per round), {} rounds of each, git push and dyno deploy in turns \
         after a warm-up of each; {}; the router asked every {} ms, the builds listed every {} ms",
        args.app_dir.display(),
        f.git.len(),
        f.git_version,
        POLL_EVERY.as_millis(),
        LIST_EVERY.as_millis()
    );
    println!(
        "{:<44} {:>8} {:>8} {:>8}",
        "seconds from the command's start", "median", "min", "max"
    );
    for (way, command, rounds) in [
        ("git push", "git push exits", &f.git),
        ("dyno deploy", "dyno deploy exits", &f.deploy),
    ] {
        println!("{way}");
        let exits = format!("  {command}");
        let steps: [(&str, Step); 6] = [
            ("  build listed (source uploaded)", |t| t.listed),
            ("  build's first output line", |t| t.first_line),
            ("  -----> Launching... (compiled)", |t| t.launching),
            ("  build's last line (released)", |t| t.last_line),
            (&exits, |t| t.exited),
            ("  router serves the new greeting", |t| t.serving),
        ];
        for (label, step) in steps {
            row(label, &secs(rounds, step), "");
        }
        row(
            "  build (first line → last line)",
            &secs(rounds, |t| t.build()),
            "",
        );
        row(
            "    compile (first line → Launching)",
            &secs(rounds, |t| t.launching.saturating_sub(t.first_line)),
            "",
        );
        row(
            "    release, restart (Launching → last)",
            &secs(rounds, |t| t.last_line.saturating_sub(t.launching)),
            "",
        );
        row("  build / serving", &shares(rounds), " %");
    }
    row(
        "anchor: git push, https http-backend",
        &seconds(&f.anchor_https),
        "",
    );
    row("anchor: git push to a path", &seconds(&f.anchor_local), "");
    let k = keys(f);
    let get = |key: &str| {
        k.iter()
            .find(|(k, _)| k == key)
            .map_or("?", |(_, v)| v.as_str())
            .to_string()
    };
    println!(
        "git push → serving / dyno deploy → serving: x{}; git push → serving / anchor push: x{}; \
         git push's own time / anchor push: x{} (medians)",
        get("git_vs_deploy"),
        get("git_vs_anchor"),
        get("git_push_vs_anchor")
    );
    let line: Vec<String> = k.iter().map(|(k, v)| format!("{k}={v}")).collect();
    println!("{}", line.join(" "));
}

fn row(label: &str, values: &[f64], unit: &str) {
    let (median, min, max) = median_min_max(values);
    let digits = if unit.is_empty() { 3 } else { 1 };
    println!("{label:<44} {median:>8.digits$} {min:>8.digits$} {max:>8.digits$}{unit}");
}

fn secs(rounds: &[Timeline], step: impl Fn(&Timeline) -> Duration) -> Vec<f64> {
    rounds.iter().map(|t| step(t).as_secs_f64()).collect()
}

fn seconds(samples: &[Duration]) -> Vec<f64> {
    samples.iter().map(Duration::as_secs_f64).collect()
}

/// The build's share of each round's time to serving, in percent.
fn shares(rounds: &[Timeline]) -> Vec<f64> {
    rounds
        .iter()
        .map(|t| 100.0 * t.build().as_secs_f64() / t.serving.as_secs_f64().max(1e-9))
        .collect()
}

fn keys(f: &Figures) -> Vec<(String, String)> {
    let median = |values: &[f64]| median_min_max(values).0;
    let mut pairs = vec![("rounds".to_string(), f.git.len().to_string())];
    for (way, rounds) in [("git", &f.git), ("deploy", &f.deploy)] {
        let (serving, min, max) = median_min_max(&secs(rounds, |t| t.serving));
        pairs.extend([
            (format!("{way}_serving_s"), format!("{serving:.3}")),
            (format!("{way}_serving_min_s"), format!("{min:.3}")),
            (format!("{way}_serving_max_s"), format!("{max:.3}")),
            (
                format!("{way}_cmd_s"),
                format!("{:.3}", median(&secs(rounds, |t| t.exited))),
            ),
            (
                format!("{way}_build_s"),
                format!("{:.3}", median(&secs(rounds, |t| t.build()))),
            ),
            (
                format!("{way}_compile_s"),
                format!(
                    "{:.3}",
                    median(&secs(rounds, |t| t.launching.saturating_sub(t.first_line)))
                ),
            ),
            (
                format!("{way}_release_s"),
                format!(
                    "{:.3}",
                    median(&secs(rounds, |t| t.last_line.saturating_sub(t.launching)))
                ),
            ),
            (
                format!("{way}_build_share_pct"),
                format!("{:.1}", median(&shares(rounds))),
            ),
        ]);
    }
    let git = median(&secs(&f.git, |t| t.serving));
    let git_push = median(&secs(&f.git, |t| t.exited));
    let deploy = median(&secs(&f.deploy, |t| t.serving));
    let https = median(&seconds(&f.anchor_https));
    let local = median(&seconds(&f.anchor_local));
    let ratio = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}", a / b)
        } else {
            "?".to_string()
        }
    };
    pairs.extend([
        ("anchor_https_push_s".to_string(), format!("{https:.3}")),
        ("anchor_local_push_s".to_string(), format!("{local:.3}")),
        ("git_vs_deploy".to_string(), ratio(git, deploy)),
        ("git_vs_anchor".to_string(), ratio(git, https)),
        ("git_push_vs_anchor".to_string(), ratio(git_push, https)),
    ]);
    pairs
}
