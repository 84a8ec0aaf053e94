//! Progress of the long verbs (`deploy`, `ps:scale`, `ps:restart`, `rollback`, `config:set`):
//! each is one API request that returns once the daemon has converged, which can take as long
//! as the slowest dyno's boot. While it runs, a second connection asks for the app's dynos every
//! [`POLL_EVERY`] and one stderr line is redrawn, Heroku style:
//! `Scaling dynos... web 12/20 up, 3 starting`.
//!
//! Only on a terminal: with stderr redirected the line is written once, without counts (logs
//! and CI output stay free of carriage returns), and with `--json` nothing at all goes to
//! stderr. The verb's result keeps going to stdout (`done, …`), so on a terminal the two halves
//! read as one line: `Scaling dynos... done, now running web at 20:Standard-1X`.

use std::collections::BTreeMap;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::time::Duration;

use dyno_api::{ApiClient, Dyno, Formation, FormationUpdate, Release};

/// How often the dynos are asked for while the request runs.
pub const POLL_EVERY: Duration = Duration::from_millis(250);

/// The process type of one-off dynos: never part of a formation's progress.
const ONE_OFF: &str = "run";

/// A redrawn line never wraps (a wrapped line cannot be redrawn with `\r`); terminals are at
/// least this wide.
const MAX_COLUMNS: usize = 79;

/// What one process type should end up as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub quantity: u32,
    /// Dynos of another size are the ones being replaced (`ps:type`, `ps:scale web=2:…`).
    pub size: Option<String>,
}

/// What the operation converges to: the dynos that count as "the new ones".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Goal {
    /// Dynos of older releases are the ones being replaced.
    pub min_release: u32,
    /// Per process type; a type not listed (a new one in the Procfile) is shown without a total.
    pub want: BTreeMap<String, Want>,
    /// Only this process type's dynos take part (`ps:restart web`).
    pub only_type: Option<String>,
}

impl Goal {
    /// The formation as it is, for operations that keep it (deploy, config, rollback, restart).
    pub fn from_formation(min_release: u32, formation: &[Formation]) -> Goal {
        Goal {
            min_release,
            only_type: None,
            want: formation
                .iter()
                .map(|f| {
                    let want = Want {
                        quantity: f.quantity,
                        size: Some(f.size.clone()),
                    };
                    (f.process_type.clone(), want)
                })
                .collect(),
        }
    }

    /// The formation after `updates` (`ps:scale`, `ps:type`).
    pub fn scaled(min_release: u32, formation: &[Formation], updates: &[FormationUpdate]) -> Goal {
        let mut goal = Goal::from_formation(min_release, formation);
        for u in updates {
            let want = goal.want.entry(u.process_type.clone()).or_insert(Want {
                quantity: 0,
                size: None,
            });
            if let Some(q) = u.quantity {
                want.quantity = q.apply(want.quantity).unwrap_or(0);
            }
            if u.size.is_some() {
                want.size = u.size.clone();
            }
        }
        goal
    }

    /// Only these process types (`ps:restart web`, `ps:restart web.1`).
    pub fn only(mut self, process_type: &str) -> Goal {
        self.want.retain(|t, _| t == process_type);
        self.only_type = Some(process_type.to_string());
        self
    }
}

#[derive(Default)]
struct Counts {
    up: u32,
    starting: u32,
    crashed: u32,
}

/// The progress text for `dynos` (as `GET /apps/{app}/dynos` lists them) towards `goal`:
/// `web 12/20 up, 3 starting; worker 1/1 up`. Empty when there is nothing to show.
pub fn describe(goal: &Goal, dynos: &[Dyno]) -> String {
    let mut counts: BTreeMap<&str, Counts> = BTreeMap::new();
    for (t, want) in &goal.want {
        if want.quantity > 0 {
            counts.entry(t).or_default();
        }
    }
    for d in dynos {
        let other_type = goal
            .only_type
            .as_ref()
            .is_some_and(|t| *t != d.process_type);
        if d.process_type == ONE_OFF || other_type || d.release.version < goal.min_release {
            continue;
        }
        let want = goal.want.get(&d.process_type);
        if let Some(size) = want.and_then(|w| w.size.as_deref()) {
            if d.size != size {
                continue;
            }
        }
        if want.is_some_and(|w| w.quantity == 0) {
            // Being scaled away.
            continue;
        }
        let c = counts.entry(&d.process_type).or_default();
        match d.state.as_str() {
            "up" => c.up += 1,
            "starting" => c.starting += 1,
            "crashed" => c.crashed += 1,
            _ => {}
        }
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(t, c)| {
            let mut s = match goal.want.get(*t) {
                Some(w) => format!("{t} {}/{} up", c.up, w.quantity),
                None => format!("{t} {} up", c.up),
            };
            if c.starting > 0 {
                s.push_str(&format!(", {} starting", c.starting));
            }
            if c.crashed > 0 {
                s.push_str(&format!(", {} crashed", c.crashed));
            }
            s
        })
        .collect();
    parts.join("; ")
}

/// The line drawn on a terminal: `prefix… status`, cut to [`MAX_COLUMNS`].
pub fn line(prefix: &str, status: &str) -> String {
    let full = format!("{prefix}{status}");
    if full.chars().count() <= MAX_COLUMNS {
        return full;
    }
    let mut cut: String = full.chars().take(MAX_COLUMNS - 1).collect();
    cut.push('…');
    cut
}

/// How the progress of one verb is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `--json`: nothing on stderr.
    Quiet,
    /// stderr is not a terminal: the prefix once, no counts.
    Plain,
    /// stderr is a terminal: the line redrawn with counts.
    Live,
}

impl Mode {
    pub fn for_output(json: bool) -> Mode {
        if json {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Live
        } else {
            Mode::Plain
        }
    }
}

/// One verb's progress line on stderr: `Scaling dynos... `, then (live) the counts, then the
/// verb prints its `done, …` on stdout.
pub struct Progress {
    mode: Mode,
    /// `Scaling dynos... `
    prefix: String,
}

impl Progress {
    /// Starts the line: `action` is `Scaling dynos` (the `... ` is added).
    pub fn start(mode: Mode, action: &str) -> Progress {
        let progress = Progress {
            mode,
            prefix: format!("{action}... "),
        };
        if mode != Mode::Quiet {
            progress.draw("");
        }
        progress
    }

    pub fn is_live(&self) -> bool {
        self.mode == Mode::Live
    }

    fn draw(&self, status: &str) {
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            Mode::Quiet => Ok(()),
            Mode::Plain => write!(err, "{}", self.prefix),
            // Carriage return and "erase line", then the whole line again.
            Mode::Live => write!(err, "\r\x1b[2K{}", line(&self.prefix, status)),
        };
        let _ = err.flush();
    }

    /// Runs `request` to its end; while live, asks for the app's dynos every [`POLL_EVERY`]
    /// on another connection and redraws the line. A failed poll only skips a redraw: the
    /// request's answer is what counts. When it ends, the line is back to its bare prefix (the
    /// verb's `done, …` completes it) or, after a failure, ends with ` !` so that the error
    /// stands on its own line.
    pub async fn follow<T, E>(
        &self,
        api: &ApiClient,
        app: &str,
        goal: &Goal,
        request: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let result = if self.is_live() {
            let mut request = std::pin::pin!(request);
            let mut shown = String::new();
            loop {
                let poll = async {
                    tokio::time::sleep(POLL_EVERY).await;
                    api.dynos(app).await
                };
                tokio::select! {
                    biased;
                    result = &mut request => break result,
                    dynos = poll => {
                        // Redrawn only when it changed: no flicker.
                        if let Ok(dynos) = dynos {
                            let status = describe(goal, &dynos);
                            if status != shown {
                                self.draw(&status);
                                shown = status;
                            }
                        }
                    }
                }
            }
        } else {
            request.await
        };
        if self.is_live() {
            self.draw("");
        }
        if result.is_err() && self.mode != Mode::Quiet {
            eprintln!("!");
        }
        result
    }
}

/// The goal of an operation that makes a new release (deploy, config, rollback): the formation
/// as it is, on a release newer than today's. `None` (no live counts, the bare line) when the
/// app cannot be read; the operation itself then says why.
pub async fn release_goal(api: &ApiClient, app: &str) -> Option<Goal> {
    let (newest, formation) = current(api, app).await?;
    Some(Goal::from_formation(newest + 1, &formation))
}

/// The current release's version and the formation.
pub async fn current(api: &ApiClient, app: &str) -> Option<(u32, Vec<Formation>)> {
    let releases: Vec<Release> = api.releases(app).await.ok()?;
    let newest = releases.iter().map(|r| r.version).max().unwrap_or(0);
    let formation: Vec<Formation> = api.formation(app).await.ok()?;
    Some((newest, formation))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dyno(name: &str, state: &str, release: u32, size: &str) -> Dyno {
        Dyno {
            name: name.into(),
            process_type: name.split('.').next().unwrap().into(),
            state: state.into(),
            release: dyno_api::heroku::ReleaseRef {
                id: String::new(),
                version: release,
            },
            size: size.into(),
            command: "python3 web.py".into(),
            ..Default::default()
        }
    }

    fn formation(list: &[(&str, u32, &str)]) -> Vec<Formation> {
        list.iter()
            .map(|(t, q, s)| Formation {
                process_type: t.to_string(),
                quantity: *q,
                size: s.to_string(),
                ..Default::default()
            })
            .collect()
    }

    const S1: &str = "Standard-1X";

    #[test]
    fn counts_the_target_release_per_process_type() {
        let goal = Goal::from_formation(3, &formation(&[("web", 3, S1), ("worker", 1, S1)]));
        let dynos = [
            // The old release's dynos still serve during the preboot: not counted.
            dyno("web.1", "up", 2, S1),
            dyno("web.2", "up", 2, S1),
            dyno("web.1", "up", 3, S1),
            dyno("web.2", "starting", 3, S1),
            dyno("web.3", "starting", 3, S1),
            dyno("worker.1", "up", 3, S1),
            // A one-off is never part of it.
            dyno("run.1", "up", 3, S1),
        ];
        assert_eq!(
            describe(&goal, &dynos),
            "web 1/3 up, 2 starting; worker 1/1 up"
        );
    }

    #[test]
    fn before_any_dyno_shows_every_wanted_type_at_zero() {
        let goal = Goal::from_formation(5, &formation(&[("web", 2, S1), ("worker", 0, S1)]));
        assert_eq!(describe(&goal, &[]), "web 0/2 up");
        assert_eq!(describe(&Goal::default(), &[]), "");
    }

    #[test]
    fn scaling_counts_the_new_quantity_and_size() {
        let now = formation(&[("web", 1, S1), ("worker", 2, S1)]);
        let updates = [
            FormationUpdate {
                process_type: "web".into(),
                quantity: Some(dyno_api::heroku::QuantityChange::To(20)),
                size: None,
            },
            FormationUpdate {
                process_type: "worker".into(),
                quantity: Some(dyno_api::heroku::QuantityChange::To(0)),
                size: None,
            },
        ];
        let goal = Goal::scaled(2, &now, &updates);
        let mut dynos: Vec<Dyno> = (1..=12)
            .map(|i| dyno(&format!("web.{i}"), "up", 2, S1))
            .collect();
        dynos.push(dyno("web.13", "starting", 2, S1));
        dynos.push(dyno("web.14", "crashed", 2, S1));
        // Scaled to zero: being stopped, not shown.
        dynos.push(dyno("worker.1", "up", 2, S1));
        assert_eq!(
            describe(&goal, &dynos),
            "web 12/20 up, 1 starting, 1 crashed"
        );

        // A new size: dynos of the old size are the ones being replaced.
        let resize = [FormationUpdate {
            process_type: "web".into(),
            quantity: None,
            size: Some("Standard-2X".into()),
        }];
        let goal = Goal::scaled(2, &formation(&[("web", 1, S1)]), &resize);
        let dynos = [
            dyno("web.1", "up", 2, S1),
            dyno("web.1", "starting", 2, "Standard-2X"),
        ];
        assert_eq!(describe(&goal, &dynos), "web 0/1 up, 1 starting");
    }

    #[test]
    fn a_type_the_formation_does_not_know_yet_has_no_total() {
        // A deploy whose Procfile adds `clock`.
        let goal = Goal::from_formation(3, &formation(&[("web", 1, S1)]));
        let dynos = [
            dyno("web.1", "up", 3, S1),
            dyno("clock.1", "starting", 3, S1),
        ];
        assert_eq!(
            describe(&goal, &dynos),
            "clock 0 up, 1 starting; web 1/1 up"
        );
    }

    #[test]
    fn a_restart_of_one_type_shows_only_that_type() {
        let goal =
            Goal::from_formation(2, &formation(&[("web", 2, S1), ("worker", 1, S1)])).only("web");
        let dynos = [
            dyno("web.2", "up", 2, S1),
            dyno("web.1", "starting", 2, S1),
            dyno("worker.1", "up", 2, S1),
        ];
        assert_eq!(describe(&goal, &dynos), "web 1/2 up, 1 starting");
    }

    #[test]
    fn the_line_never_wraps() {
        let short = line("Scaling dynos... ", "web 12/20 up");
        assert_eq!(short, "Scaling dynos... web 12/20 up");
        let long = line("Scaling dynos... ", &"web 1/2 up; ".repeat(20));
        assert_eq!(long.chars().count(), MAX_COLUMNS);
        assert!(long.ends_with('…'));
    }
}
