//! Apps, their settings and their formation.

use std::collections::BTreeMap;
use std::path::PathBuf;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::{App, Config, DestroyedApp, FormationEntry, ProcessTypes, ScaleChange};
use crate::validate::{AppName, Hostname, ValidationError};

/// The stack every app gets (there is one: the host's userland, seen read-only).
pub const STACK: &str = "dyno-1";

const APP_COLUMNS: &str = "a.name, a.created_at, a.maintenance, a.metrics_enabled, a.stack,
     (SELECT MAX(version) FROM releases r WHERE r.app = a.name AND r.status = 'succeeded'),
     a.rowid, a.uuid,
     (SELECT group_concat(hostname, ' ') FROM (SELECT hostname FROM domains d
         WHERE d.app = a.name ORDER BY hostname)), a.preboot";

fn app_from_row(r: &Row<'_>) -> rusqlite::Result<App> {
    Ok(App {
        name: r.get(0)?,
        created_at_ms: r.get(1)?,
        maintenance: r.get(2)?,
        metrics_enabled: r.get(3)?,
        stack: r.get(4)?,
        current_release: r.get::<_, Option<u32>>(5)?.unwrap_or(0),
        id: r.get(6)?,
        uuid: r.get(7)?,
        domains: r
            .get::<_, Option<String>>(8)?
            .map(|list| list.split(' ').map(str::to_owned).collect())
            .unwrap_or_default(),
        preboot: r.get(9)?,
    })
}

pub(super) fn require_app(conn: &Connection, app: &AppName) -> Result<App, StateError> {
    conn.query_row(
        &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.name = ?1"),
        [app.as_str()],
        app_from_row,
    )
    .optional()?
    .ok_or_else(|| {
        StateError::not_found(format!(
            "no app named {app}; see `dyno apps` for the apps there are"
        ))
    })
}

impl Store {
    /// Creates an app with release v1 `Initial release` (no slug, no config, no process
    /// types), as Heroku does.
    pub fn create_app(&mut self, name: &AppName) -> Result<App, StateError> {
        self.write(|tx, _| {
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM apps WHERE name = ?1)",
                [name.as_str()],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StateError::conflict(format!(
                    "an app named {name} already exists; choose another name"
                )));
            }
            tx.execute(
                "INSERT INTO apps (name, created_at, stack, uuid) VALUES (?1, ?2, ?3, ?4)",
                params![name.as_str(), now_ms(), STACK, crate::ids::uuid_v4()],
            )?;
            super::releases::insert_release(
                tx,
                name.as_str(),
                "Initial release",
                None,
                &ProcessTypes::new(),
                &Config::new(),
                super::releases::Phase::None,
            )?;
            require_app(tx, name)
        })
    }

    /// Destroys an app: its releases, config vars, formation and drains are deleted; its dynos
    /// are marked `stopping` and returned with the slugs no release references any more, for
    /// the caller to tear down (then [`Store::remove_dyno`] each dyno).
    pub fn destroy_app(&mut self, name: &AppName) -> Result<DestroyedApp, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            let drains = super::drains::drains_of(tx, name.as_str())?;
            let mut stmt = tx.prepare(
                "SELECT DISTINCT slug_path FROM releases WHERE app = ?1 AND slug_path IS NOT NULL",
            )?;
            let slugs: Vec<String> = stmt
                .query_map([name.as_str()], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            drop(stmt);
            tx.execute(
                "UPDATE dynos SET state = 'stopping', state_changed_at = ?2
                 WHERE app = ?1 AND state != 'stopping'",
                params![name.as_str(), now_ms()],
            )?;
            let dynos = super::dynos::dynos_where(tx, "d.app = ?1", [name.as_str()])?;
            // Cascades to releases, config_vars, formation and drains.
            tx.execute("DELETE FROM apps WHERE name = ?1", [name.as_str()])?;
            let mut unused = Vec::new();
            for slug in slugs {
                let still_used: bool = tx.query_row(
                    "SELECT EXISTS (SELECT 1 FROM releases WHERE slug_path = ?1)",
                    [&slug],
                    |r| r.get(0),
                )?;
                if !still_used {
                    unused.push(PathBuf::from(slug));
                }
            }
            Ok(DestroyedApp {
                name: name.to_string(),
                dynos,
                slugs: unused,
                drains,
            })
        })
    }

    /// `apps:rename`: every row keyed by the app's name follows it (releases, config vars,
    /// formation, drains, domains, dynos); its id (`uuid`) stays. A name another app has, or a
    /// release of the app still pending, is refused (`conflict`), and nothing changes.
    pub fn rename_app(&mut self, from: &AppName, to: &AppName) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, from)?;
            let taken: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM apps WHERE name = ?1)",
                [to.as_str()],
                |r| r.get(0),
            )?;
            if taken {
                return Err(StateError::conflict(format!(
                    "an app named {to} already exists; choose another name"
                )));
            }
            // A release phase settles its release under the app's name: not meanwhile.
            let pending: Option<u32> = tx
                .query_row(
                    "SELECT version FROM releases WHERE app = ?1 AND status = 'pending'",
                    [from.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(v) = pending {
                return Err(StateError::conflict(format!(
                    "the release command of v{v} of {from} is still running; rename the app \
                     once it has ended (see `heroku releases -a {from}`)"
                )));
            }
            // The foreign keys name `apps(name)` without ON UPDATE: checked at commit, once
            // every row has followed (the pragma ends with the transaction).
            tx.pragma_update(None, "defer_foreign_keys", true)?;
            tx.execute(
                "UPDATE apps SET name = ?2 WHERE name = ?1",
                [from.as_str(), to.as_str()],
            )?;
            for table in [
                "releases",
                "config_vars",
                "formation",
                "drains",
                "domains",
                "dynos",
            ] {
                tx.execute(
                    &format!("UPDATE {table} SET app = ?2 WHERE app = ?1"),
                    [from.as_str(), to.as_str()],
                )?;
            }
            require_app(tx, to)
        })
    }

    /// All apps, by name.
    pub fn list_apps(&self) -> Result<Vec<App>, StateError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare(&format!("SELECT {APP_COLUMNS} FROM apps a ORDER BY a.name"))?;
            let apps = stmt
                .query_map([], app_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(apps)
        })
    }

    pub fn app(&self, name: &AppName) -> Result<App, StateError> {
        self.read(|conn| require_app(conn, name))
    }

    /// The app whose Heroku id is `uuid` (any case).
    pub fn app_by_uuid(&self, uuid: &str) -> Result<App, StateError> {
        self.read(|conn| {
            conn.query_row(
                &format!("SELECT {APP_COLUMNS} FROM apps a WHERE a.uuid = lower(?1)"),
                [uuid],
                app_from_row,
            )
            .optional()?
            .ok_or_else(|| {
                StateError::not_found(format!(
                    "no app with id {uuid}; see `dyno apps` for the apps there are"
                ))
            })
        })
    }

    /// Routes `hostname` to the app (`domains:add`); a name another app has is refused.
    pub fn add_domain(&mut self, name: &AppName, hostname: &Hostname) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            let owner: Option<String> = tx
                .query_row(
                    "SELECT app FROM domains WHERE hostname = ?1",
                    [hostname.as_str()],
                    |r| r.get(0),
                )
                .optional()?;
            match owner {
                Some(app) if app == name.as_str() => {}
                Some(_) => {
                    return Err(StateError::conflict(format!(
                        "{hostname} is already a domain of another app; remove it there first"
                    )))
                }
                None => {
                    tx.execute(
                        "INSERT INTO domains (hostname, app, created_at) VALUES (?1, ?2, ?3)",
                        params![hostname.as_str(), name.as_str(), now_ms()],
                    )?;
                }
            }
            require_app(tx, name)
        })
    }

    /// Stops routing `hostname` to the app (`domains:remove`).
    pub fn remove_domain(
        &mut self,
        name: &AppName,
        hostname: &Hostname,
    ) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            let removed = tx.execute(
                "DELETE FROM domains WHERE hostname = ?1 AND app = ?2",
                [hostname.as_str(), name.as_str()],
            )?;
            if removed == 0 {
                return Err(StateError::not_found(format!(
                    "{hostname} is not a domain of {name}; see `heroku domains -a {name}`"
                )));
            }
            require_app(tx, name)
        })
    }

    /// When each custom domain of the app was added (ms since the epoch), by hostname.
    pub fn domains_added(&self, name: &AppName) -> Result<BTreeMap<String, i64>, StateError> {
        self.read(|conn| {
            require_app(conn, name)?;
            let mut stmt =
                conn.prepare("SELECT hostname, created_at FROM domains WHERE app = ?1")?;
            let rows = stmt
                .query_map([name.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<BTreeMap<_, _>, _>>()?;
            Ok(rows)
        })
    }

    /// The id of the store's one account (every API token acts as it), a UUID.
    pub fn account_uuid(&self) -> Result<String, StateError> {
        self.read(|conn| {
            let hex: String = conn.query_row(
                "SELECT value FROM meta WHERE key = 'account_uuid'",
                [],
                |r| r.get(0),
            )?;
            Ok(crate::ids::uuid_from_hex(&hex))
        })
    }

    /// `maintenance:on` / `maintenance:off` (the router answers 503 for the app while on).
    pub fn set_maintenance(&mut self, name: &AppName, on: bool) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            tx.execute(
                "UPDATE apps SET maintenance = ?2 WHERE name = ?1",
                params![name.as_str(), on],
            )?;
            require_app(tx, name)
        })
    }

    /// Heroku's labs feature `log-runtime-metrics` on or off: the daemon then logs each dyno's
    /// load and memory every 20 s.
    pub fn set_metrics_enabled(&mut self, name: &AppName, on: bool) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            tx.execute(
                "UPDATE apps SET metrics_enabled = ?2 WHERE name = ?1",
                params![name.as_str(), on],
            )?;
            require_app(tx, name)
        })
    }

    /// Heroku's app feature `preboot` on or off: whether a new release's web dynos take
    /// traffic before the old ones stop.
    pub fn set_preboot(&mut self, name: &AppName, on: bool) -> Result<App, StateError> {
        self.write(|tx, _| {
            require_app(tx, name)?;
            tx.execute(
                "UPDATE apps SET preboot = ?2 WHERE name = ?1",
                params![name.as_str(), on],
            )?;
            require_app(tx, name)
        })
    }

    /// The formation: one entry per process type of the current release.
    pub fn formation(&self, app: &AppName) -> Result<Vec<FormationEntry>, StateError> {
        self.read(|conn| {
            require_app(conn, app)?;
            formation_of(conn, app.as_str())
        })
    }

    /// `ps:scale web=3 worker=1` and `ps:type worker=Standard-2X`, all changes or none. Every
    /// type must be in the current release's Procfile; quantities must be within the store's
    /// `max_quantity`. Returns the whole formation after the change.
    pub fn scale(
        &mut self,
        app: &AppName,
        changes: &[ScaleChange],
    ) -> Result<Vec<FormationEntry>, StateError> {
        if changes.is_empty() {
            return Err(ValidationError::new(
                "formation",
                "nothing to scale; use TYPE=QUANTITY[:SIZE], like web=2",
            )
            .into());
        }
        for c in changes {
            if c.quantity.is_none() && c.size.is_none() {
                return Err(ValidationError::new(
                    "formation",
                    format!(
                        "no quantity or size for {}; use {}=QUANTITY[:SIZE]",
                        c.process_type, c.process_type
                    ),
                )
                .into());
            }
        }
        self.write(|tx, options| {
            require_app(tx, app)?;
            let current: BTreeMap<String, FormationEntry> = formation_of(tx, app.as_str())?
                .into_iter()
                .map(|e| (e.process_type.clone(), e))
                .collect();
            for c in changes {
                let t = c.process_type.as_str();
                if !current.contains_key(t) {
                    let known: Vec<&str> = current.keys().map(String::as_str).collect();
                    return Err(StateError::not_found(if known.is_empty() {
                        format!("no such process type {t} in Procfile: app {app} has no process types yet; deploy it first; nothing was changed")
                    } else {
                        format!(
                            "no such process type {t} in Procfile; app {app} has {}; nothing was changed",
                            known.join(", ")
                        )
                    }));
                }
                if let Some(q) = c.quantity {
                    if q.get() > options.max_quantity {
                        return Err(ValidationError::new(
                            "quantity",
                            format!(
                                "quantity {q} for {t} is over the limit of {} dynos per process type",
                                options.max_quantity
                            ),
                        )
                        .into());
                    }
                    tx.execute(
                        "UPDATE formation SET quantity = ?3 WHERE app = ?1 AND process_type = ?2",
                        params![app.as_str(), t, q.get()],
                    )?;
                }
                if let Some(size) = &c.size {
                    tx.execute(
                        "UPDATE formation SET size = ?3 WHERE app = ?1 AND process_type = ?2",
                        params![app.as_str(), t, size.as_str()],
                    )?;
                }
            }
            formation_of(tx, app.as_str())
        })
    }
}

pub(super) fn formation_of(
    conn: &Connection,
    app: &str,
) -> Result<Vec<FormationEntry>, StateError> {
    let mut stmt = conn.prepare(
        "SELECT process_type, quantity, size FROM formation WHERE app = ?1 ORDER BY process_type",
    )?;
    let rows = stmt
        .query_map([app], |r| {
            Ok(FormationEntry {
                process_type: r.get(0)?,
                quantity: r.get(1)?,
                size: r.get(2)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}
