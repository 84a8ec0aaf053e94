//! Every attack records a row (attack, category, expectation, what happened, pass/fail) as JSON
//! in the results dir; `doc.rs` turns the rows into the attack table of `docs/isolation.md`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::rig::Rig;

/// Categories, in the order of the doc's table.
pub const CONNECTIONS: &str = "Connections of others";
pub const REACH: &str = "Reaching others";
pub const FORGE: &str = "Forging";
pub const VIEW: &str = "Escaping the view";
pub const SYSCALLS: &str = "Denied syscalls";
pub const FIGURES: &str = "Host figures";
pub const ABUSE: &str = "Abuse";
pub const CATEGORIES: [&str; 7] = [CONNECTIONS, REACH, FORGE, VIEW, SYSCALLS, FIGURES, ABUSE];

/// One attack: what it is and what must happen.
pub struct Attack {
    /// The test's function name (the row's file name; the doc checks every test has one).
    pub test: &'static str,
    pub category: &'static str,
    /// What the attacker tries, in a few words.
    pub attack: &'static str,
    /// What must happen.
    pub expect: &'static str,
    /// What Heroku / Docker / podman do about it.
    pub others: &'static str,
}

/// What happened: `result` says it in words that do not change from run to run (no pids,
/// ports or timings), so that the doc only changes when the behaviour does.
pub struct Outcome {
    pub pass: bool,
    pub result: String,
}

impl Outcome {
    pub fn new(pass: bool, result: impl Into<String>) -> Outcome {
        Outcome {
            pass,
            result: result.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Row {
    pub test: String,
    pub category: String,
    pub attack: String,
    pub expect: String,
    pub others: String,
    pub result: String,
    pub pass: bool,
}

/// Where the rows go: `target/tmp/isolation-results/<test>.json`.
pub fn results_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("isolation-results")
}

/// Builds the rig, runs `body` against it, records the row, and fails the test when the
/// expectation does not hold (with the details `body` gathered). A test that cannot even run
/// records that too, then fails with its own message.
pub fn attack(attack: Attack, body: impl FnOnce(&Rig) -> Outcome) {
    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Only the host-figure attacks need the private /proc view: each LXCFS a test starts
        // takes seconds to stop again.
        let rig = Rig::start(&short_tag(attack.test), attack.category == FIGURES);
        body(&rig)
    }));
    let (outcome, panic) = match ran {
        Ok(outcome) => (outcome, None),
        Err(panic) => (Outcome::new(false, "the test could not run"), Some(panic)),
    };
    write_row(&attack, &outcome);
    if let Some(panic) = panic {
        std::panic::resume_unwind(panic);
    }
    assert!(
        outcome.pass,
        "{}: expected {}\ngot: {}",
        attack.attack, attack.expect, outcome.result
    );
}

fn write_row(attack: &Attack, outcome: &Outcome) {
    let row = Row {
        test: attack.test.into(),
        category: attack.category.into(),
        attack: attack.attack.into(),
        expect: attack.expect.into(),
        others: attack.others.into(),
        result: outcome.result.clone(),
        pass: outcome.pass,
    };
    let dir = results_dir();
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join(format!("{}.json", attack.test)),
        serde_json::to_vec_pretty(&row).unwrap(),
    )
    .unwrap();
}

/// Tags become paths and names (`/run/dyno-up-test-<pid>-<tag>`): keep them short.
fn short_tag(test: &str) -> String {
    let tag: String = test.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
    format!("iso{}", &tag[..tag.len().min(20)])
}
