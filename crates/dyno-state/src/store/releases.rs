//! Releases (immutable; each change is a new one), config vars and rollback.

use std::collections::BTreeSet;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::{Config, NewRelease, ProcessTypes, Release, ReleaseStatus, Slug};
use crate::validate::{
    shown, AppName, ConfigKey, ConfigValue, ProcessType, SizeName, ValidationError,
};

/// The longest release description and Procfile command we keep.
const MAX_DESCRIPTION: usize = 1024;
const MAX_COMMAND: usize = 4096;

impl Store {
    /// Records a deploy: a new release with `release.slug` and its process types, the app's
    /// current config vars, version = newest + 1. The formation follows the process types: a
    /// new type gets a row (`web` at 1 dyno, others at 0), a vanished type loses its row.
    pub fn create_release(
        &mut self,
        app: &AppName,
        release: NewRelease,
    ) -> Result<Release, StateError> {
        self.deploy_release(app, release, Phase::None)
    }

    fn deploy_release(
        &mut self,
        app: &AppName,
        release: NewRelease,
        phase: Phase,
    ) -> Result<Release, StateError> {
        check_description(&release.description)?;
        if release.process_types.is_empty() {
            return Err(ValidationError::new(
                "process types",
                "a release needs at least one process type; add a Procfile with a line like `web: python3 web.py`",
            )
            .into());
        }
        let mut types = ProcessTypes::new();
        for (t, command) in &release.process_types {
            check_command(t.as_str(), command)?;
            if types.insert(t.to_string(), command.clone()).is_some() {
                return Err(ValidationError::new(
                    "process types",
                    format!("process type {t} is defined twice; keep one line per type"),
                )
                .into());
            }
        }
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let mut config = config_of(tx, app.as_str())?;
            for (key, value) in &release.default_config {
                config.entry(key.clone()).or_insert_with(|| value.clone());
            }
            insert_release(
                tx,
                app.as_str(),
                &release.description,
                Some(&release.slug),
                &types,
                &config,
                phase,
            )
        })
    }

    /// All releases of `app`, newest first (as `heroku releases`).
    pub fn releases(&self, app: &AppName) -> Result<Vec<Release>, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 ORDER BY version DESC"
            ))?;
            let rows = stmt
                .query_map([app.as_str()], release_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    pub fn release(&self, app: &AppName, version: u32) -> Result<Release, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            release_at(conn, app.as_str(), version)
        })
    }

    /// The newest release: what dynos of `app` should run.
    pub fn current_release(&self, app: &AppName) -> Result<Release, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            current_release_of(conn, app.as_str())
        })
    }

    /// `rollback vN`: a new release with vN's slug, process types and config (and the app's
    /// config vars set back to vN's), described `Rollback to vN`.
    pub fn rollback(&mut self, app: &AppName, version: u32) -> Result<Release, StateError> {
        self.rollback_release(app, version, Phase::None)
    }

    fn rollback_release(
        &mut self,
        app: &AppName,
        version: u32,
        phase: Phase,
    ) -> Result<Release, StateError> {
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let old = release_at(tx, app.as_str(), version)?;
            if old.status != ReleaseStatus::Succeeded {
                return Err(ValidationError::new(
                    "release",
                    format!(
                        "v{version} of {app} is {}, it never ran; roll back to a succeeded release (see `heroku releases -a {app}`)",
                        old.status
                    ),
                )
                .into());
            }
            insert_release(
                tx,
                app.as_str(),
                &format!("Rollback to v{version}"),
                old.slug.as_ref(),
                &old.process_types,
                &old.config,
                phase,
            )
        })
    }

    /// The app's current config vars.
    pub fn config(&self, app: &AppName) -> Result<Config, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            config_of(conn, app.as_str())
        })
    }

    /// `config:set K=V ...`: sets the vars and creates a release (`Set K1, K2 config vars`) with
    /// the current slug and the new config. A key given twice keeps its last value.
    pub fn config_set(
        &mut self,
        app: &AppName,
        pairs: &[(ConfigKey, ConfigValue)],
    ) -> Result<Release, StateError> {
        self.config_set_release(app, pairs, Phase::None)
    }

    fn config_set_release(
        &mut self,
        app: &AppName,
        pairs: &[(ConfigKey, ConfigValue)],
        phase: Phase,
    ) -> Result<Release, StateError> {
        if pairs.is_empty() {
            return Err(
                ValidationError::new("config", "no config vars given; use KEY=value").into(),
            );
        }
        let mut keys: Vec<&str> = Vec::new();
        for (k, _) in pairs {
            if !keys.contains(&k.as_str()) {
                keys.push(k.as_str());
            }
        }
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let current = current_release_of(tx, app.as_str())?;
            let mut config = config_of(tx, app.as_str())?;
            for (k, v) in pairs {
                config.insert(k.to_string(), v.to_string());
            }
            insert_release(
                tx,
                app.as_str(),
                &format!("Set {} config vars", keys.join(", ")),
                current.slug.as_ref(),
                &current.process_types,
                &config,
                phase,
            )
        })
    }

    /// `config:unset K ...`: removes the vars and creates a release (`Remove K config vars`).
    /// Keys that are not set are ignored; if none is set, nothing changes (`not_found`).
    pub fn config_unset(
        &mut self,
        app: &AppName,
        keys: &[ConfigKey],
    ) -> Result<Release, StateError> {
        self.config_unset_release(app, keys, Phase::None)
    }

    fn config_unset_release(
        &mut self,
        app: &AppName,
        keys: &[ConfigKey],
        phase: Phase,
    ) -> Result<Release, StateError> {
        if keys.is_empty() {
            return Err(ValidationError::new("config", "no config var names given").into());
        }
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let current = current_release_of(tx, app.as_str())?;
            let mut config = config_of(tx, app.as_str())?;
            let mut removed: Vec<&str> = Vec::new();
            for k in keys {
                if config.remove(k.as_str()).is_some() {
                    removed.push(k.as_str());
                }
            }
            if removed.is_empty() {
                let names: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                return Err(StateError::not_found(format!(
                    "config var {} is not set on app {app}; see `dyno config -a {app}`; nothing was changed",
                    names.join(", ")
                )));
            }
            insert_release(
                tx,
                app.as_str(),
                &format!("Remove {} config vars", removed.join(", ")),
                current.slug.as_ref(),
                &current.process_types,
                &config,
                phase,
            )
        })
    }
}

/// Whether a new release waits for its release phase (`pending`) or is released at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Released at once: its config becomes the app's, the formation follows its types.
    None,
    /// `pending` until [`Store::settle_release`]; until then the app runs what it ran.
    Runs,
}

/// A change that makes a release, for [`Store::begin_release`].
#[derive(Debug, Clone)]
pub enum ReleaseChange {
    Deploy(NewRelease),
    SetConfig(Vec<(ConfigKey, ConfigValue)>),
    UnsetConfig(Vec<ConfigKey>),
    Rollback(u32),
}

impl Store {
    /// Records `change` as a `pending` release whose release phase is about to run: it is in
    /// the list (Heroku's `release command executing`), while the app's config vars, formation
    /// and current release stay as they are until [`Store::settle_release`]. One release of an
    /// app is pending at a time.
    pub fn begin_release(
        &mut self,
        app: &AppName,
        change: ReleaseChange,
    ) -> Result<Release, StateError> {
        match change {
            ReleaseChange::Deploy(release) => self.deploy_release(app, release, Phase::Runs),
            ReleaseChange::SetConfig(pairs) => self.config_set_release(app, &pairs, Phase::Runs),
            ReleaseChange::UnsetConfig(keys) => self.config_unset_release(app, &keys, Phase::Runs),
            ReleaseChange::Rollback(version) => self.rollback_release(app, version, Phase::Runs),
        }
    }

    /// Ends a pending release: `succeeded` makes it the current release (its config vars
    /// become the app's, the formation follows its process types); `failed` leaves it in the
    /// list and everything else as it was.
    pub fn settle_release(
        &mut self,
        app: &AppName,
        version: u32,
        succeeded: bool,
    ) -> Result<Release, StateError> {
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let release = release_at(tx, app.as_str(), version)?;
            if release.status != ReleaseStatus::Pending {
                return Err(StateError::conflict(format!(
                    "v{version} of {app} is already {}",
                    release.status
                )));
            }
            let status = if succeeded {
                ReleaseStatus::Succeeded
            } else {
                ReleaseStatus::Failed
            };
            tx.execute(
                "UPDATE releases SET status = ?3 WHERE app = ?1 AND version = ?2",
                params![app.as_str(), version, status.as_str()],
            )?;
            if succeeded {
                apply_release(tx, app.as_str(), &release.config, &release.process_types)?;
            }
            Ok(Release { status, ..release })
        })
    }

    /// Marks every pending release failed: their release phase cannot be running any more
    /// (the daemon that ran it stopped). Returns them.
    pub fn fail_pending_releases(&mut self) -> Result<Vec<Release>, StateError> {
        self.write(|tx, _| {
            let mut stmt = tx.prepare(&format!(
                "SELECT {RELEASE_COLUMNS} FROM releases WHERE status = 'pending'"
            ))?;
            let pending = stmt
                .query_map([], release_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            drop(stmt);
            tx.execute(
                "UPDATE releases SET status = 'failed' WHERE status = 'pending'",
                [],
            )?;
            Ok(pending
                .into_iter()
                .map(|r| Release {
                    status: ReleaseStatus::Failed,
                    ..r
                })
                .collect())
        })
    }
}

fn check_description(d: &str) -> Result<(), ValidationError> {
    if d.trim().is_empty() || d.len() > MAX_DESCRIPTION || d.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "description",
            format!(
                "release description {} must be one line of 1 to {MAX_DESCRIPTION} bytes, like `Deploy 3f2a9c1`",
                shown(d)
            ),
        ));
    }
    Ok(())
}

fn check_command(t: &str, command: &str) -> Result<(), ValidationError> {
    if command.trim().is_empty() || command.len() > MAX_COMMAND || command.contains(['\0', '\n']) {
        return Err(ValidationError::new(
            "process types",
            format!(
                "the command of process type {t} must be one line of 1 to {MAX_COMMAND} bytes without NUL, like `python3 web.py`"
            ),
        ));
    }
    Ok(())
}

pub(super) const RELEASE_COLUMNS: &str =
    "app, version, created_at, description, slug_path, slug_digest, process_types, config, status";

pub(super) fn release_from_row(r: &Row<'_>) -> rusqlite::Result<Release> {
    let json = |i: usize| -> rusqlite::Result<_> {
        let text: String = r.get(i)?;
        serde_json::from_str(&text).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    };
    let slug_path: Option<String> = r.get(4)?;
    let slug_digest: Option<String> = r.get(5)?;
    Ok(Release {
        app: r.get(0)?,
        version: r.get(1)?,
        created_at_ms: r.get(2)?,
        description: r.get(3)?,
        slug: match (slug_path, slug_digest) {
            (Some(path), Some(digest)) => Some(Slug {
                path: path.into(),
                digest,
            }),
            _ => None,
        },
        process_types: json(6)?,
        config: json(7)?,
        status: {
            let text: String = r.get(8)?;
            ReleaseStatus::from_db(&text).ok_or_else(|| {
                rusqlite::Error::FromSqlConversionFailure(
                    8,
                    rusqlite::types::Type::Text,
                    format!("unknown release status {text:?}").into(),
                )
            })?
        },
    })
}

pub(super) fn release_at(
    conn: &Connection,
    app: &str,
    version: u32,
) -> Result<Release, StateError> {
    conn.query_row(
        &format!("SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND version = ?2"),
        params![app, version],
        release_from_row,
    )
    .optional()?
    .ok_or_else(|| {
        StateError::not_found(format!(
            "app {app} has no release v{version}; see `dyno releases -a {app}`"
        ))
    })
}

pub(super) fn current_release_of(conn: &Connection, app: &str) -> Result<Release, StateError> {
    conn.query_row(
        &format!(
            "SELECT {RELEASE_COLUMNS} FROM releases WHERE app = ?1 AND status = 'succeeded'
             ORDER BY version DESC LIMIT 1"
        ),
        [app],
        release_from_row,
    )
    .optional()?
    .ok_or_else(|| StateError::not_found(format!("app {app} has no release")))
}

pub(super) fn config_of(conn: &Connection, app: &str) -> Result<Config, StateError> {
    let mut stmt = conn.prepare("SELECT key, value FROM config_vars WHERE app = ?1")?;
    let rows = stmt
        .query_map([app], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<Result<Config, _>>()?;
    Ok(rows)
}

fn replace_config(conn: &Connection, app: &str, config: &Config) -> Result<(), StateError> {
    conn.execute("DELETE FROM config_vars WHERE app = ?1", [app])?;
    let mut stmt = conn.prepare("INSERT INTO config_vars (app, key, value) VALUES (?1, ?2, ?3)")?;
    for (k, v) in config {
        stmt.execute(params![app, k, v])?;
    }
    Ok(())
}

/// Appends a release (version = newest + 1). Released at once (`Phase::None`), its config
/// becomes the app's and the formation follows its process types; otherwise it is `pending`.
pub(super) fn insert_release(
    conn: &Connection,
    app: &str,
    description: &str,
    slug: Option<&Slug>,
    process_types: &ProcessTypes,
    config: &Config,
    phase: Phase,
) -> Result<Release, StateError> {
    let pending: Option<u32> = conn
        .query_row(
            "SELECT version FROM releases WHERE app = ?1 AND status = 'pending'",
            [app],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(v) = pending {
        return Err(StateError::conflict(format!(
            "the release command of v{v} of {app} is still running; wait for it to end (see `heroku releases -a {app}`), then try again"
        )));
    }
    let status = match phase {
        Phase::None => ReleaseStatus::Succeeded,
        Phase::Runs => ReleaseStatus::Pending,
    };
    let version: u32 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) + 1 FROM releases WHERE app = ?1",
        [app],
        |r| r.get(0),
    )?;
    let created_at_ms = now_ms();
    conn.execute(
        "INSERT INTO releases (app, version, created_at, description, slug_path, slug_digest, process_types, config, status)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        params![
            app,
            version,
            created_at_ms,
            description,
            slug.map(|s| s.path.to_string_lossy().into_owned()),
            slug.map(|s| s.digest.clone()),
            serde_json::to_string(process_types).expect("a string map serialises"),
            serde_json::to_string(config).expect("a string map serialises"),
            status.as_str(),
        ],
    )?;
    if phase == Phase::None {
        apply_release(conn, app, config, process_types)?;
    }
    Ok(Release {
        app: app.to_string(),
        version,
        created_at_ms,
        description: description.to_string(),
        slug: slug.cloned(),
        process_types: process_types.clone(),
        config: config.clone(),
        status,
    })
}

/// A release becomes the app's: its config vars, and the formation follows its types.
fn apply_release(
    conn: &Connection,
    app: &str,
    config: &Config,
    process_types: &ProcessTypes,
) -> Result<(), StateError> {
    replace_config(conn, app, config)?;
    sync_formation(conn, app, process_types)
}

fn sync_formation(conn: &Connection, app: &str, types: &ProcessTypes) -> Result<(), StateError> {
    let mut stmt = conn.prepare("SELECT process_type FROM formation WHERE app = ?1")?;
    let existing = stmt
        .query_map([app], |r| r.get::<_, String>(0))?
        .collect::<Result<BTreeSet<_>, _>>()?;
    for gone in existing.iter().filter(|t| !types.contains_key(*t)) {
        conn.execute(
            "DELETE FROM formation WHERE app = ?1 AND process_type = ?2",
            params![app, gone],
        )?;
    }
    // The release phase runs once per deploy, never as part of the formation (as on Heroku).
    let formation_types = types.keys().filter(|t| *t != ProcessType::RELEASE);
    for new in formation_types.filter(|t| !existing.contains(*t)) {
        let quantity = if new == "web" { 1 } else { 0 };
        conn.execute(
            "INSERT INTO formation (app, process_type, quantity, size) VALUES (?1, ?2, ?3, ?4)",
            params![app, new, quantity, SizeName::default().as_str()],
        )?;
    }
    Ok(())
}
