//! Builds and the app's buildpack installations. A build row is written when the build
//! starts (`pending`) and settles once (`succeeded` with its release, or `failed`); at most
//! one of an app's builds is pending (the schema's partial unique index backs the check).

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::{Build, BuildStatus};
use crate::validate::AppName;

const COLUMNS: &str = "b.id, a.name, b.app_uuid, b.status, b.source_url, b.source_version, \
                       b.buildpacks, b.output_secret, b.release_version, b.created_at, \
                       b.updated_at";

fn build_from_row(r: &Row<'_>) -> rusqlite::Result<Build> {
    let status: String = r.get(3)?;
    let buildpacks: String = r.get(6)?;
    Ok(Build {
        id: r.get(0)?,
        app: r.get(1)?,
        app_uuid: r.get(2)?,
        status: BuildStatus::parse(&status).unwrap_or(BuildStatus::Failed),
        source_url: r.get(4)?,
        source_version: r.get(5)?,
        buildpacks: serde_json::from_str(&buildpacks).unwrap_or_default(),
        output_secret: r.get(7)?,
        release_version: r.get(8)?,
        created_at_ms: r.get(9)?,
        updated_at_ms: r.get(10)?,
    })
}

fn find(conn: &Connection, id: &str) -> Result<Option<Build>, StateError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {COLUMNS} FROM builds b JOIN apps a ON a.uuid = b.app_uuid WHERE b.id = ?1"
            ),
            [id],
            build_from_row,
        )
        .optional()?)
}

/// What a new build is made of.
pub struct NewBuild<'a> {
    pub source_url: &'a str,
    pub source_version: Option<&'a str>,
    pub buildpacks: &'a [String],
}

impl Store {
    /// Records a new `pending` build; `Conflict` naming the running one when the app has one.
    pub fn start_build(&mut self, app: &AppName, new: NewBuild<'_>) -> Result<Build, StateError> {
        let id = crate::ids::uuid_v4();
        let secret = crate::ids::uuid_v4().replace('-', "");
        self.write(|tx, _| {
            let owner = super::apps::require_app(tx, app)?;
            let running: Option<String> = tx
                .query_row(
                    "SELECT id FROM builds WHERE app_uuid = ?1 AND status = 'pending'",
                    [&owner.uuid],
                    |r| r.get(0),
                )
                .optional()?;
            if let Some(running) = running {
                return Err(StateError::Conflict {
                    message: format!(
                        "a build of {app} is running already (build {running}); wait for it to \
                         finish (`dyno builds:info {running} -a {app}` shows it), then push again"
                    ),
                });
            }
            let now = now_ms();
            let buildpacks = serde_json::to_string(new.buildpacks).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "INSERT INTO builds (id, app_uuid, status, source_url, source_version, \
                 buildpacks, output_secret, created_at, updated_at) \
                 VALUES (?1, ?2, 'pending', ?3, ?4, ?5, ?6, ?7, ?7)",
                params![
                    id,
                    owner.uuid,
                    new.source_url,
                    new.source_version,
                    buildpacks,
                    secret,
                    now
                ],
            )?;
            find(tx, &id)?.ok_or_else(|| StateError::not_found(format!("no build {id}")))
        })
    }

    /// Settles a pending build: `Succeeded` with the release it made, or `Failed`. The
    /// buildpacks it ran replace the ones it was asked for (detection names them).
    pub fn finish_build(
        &mut self,
        id: &str,
        status: BuildStatus,
        release_version: Option<u32>,
        buildpacks: &[String],
    ) -> Result<Build, StateError> {
        self.write(|tx, _| {
            let buildpacks = serde_json::to_string(buildpacks).unwrap_or_else(|_| "[]".into());
            tx.execute(
                "UPDATE builds SET status = ?1, release_version = ?2, buildpacks = ?3, \
                 updated_at = ?4 WHERE id = ?5 AND status = 'pending'",
                params![status.as_str(), release_version, buildpacks, now_ms(), id],
            )?;
            find(tx, id)?.ok_or_else(|| StateError::not_found(format!("no build {id}")))
        })
    }

    /// Every build still `pending` (a daemon that starts fails them: their runs are gone).
    pub fn pending_builds(&self) -> Result<Vec<Build>, StateError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM builds b JOIN apps a ON a.uuid = b.app_uuid \
                 WHERE b.status = 'pending'"
            ))?;
            let rows = stmt
                .query_map([], build_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// The ids of every app's builds (a daemon that starts removes the output files of
    /// builds no longer here).
    pub fn build_ids(&self) -> Result<std::collections::HashSet<String>, StateError> {
        self.read(|conn| {
            let mut stmt = conn.prepare("SELECT id FROM builds")?;
            let ids = stmt
                .query_map([], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            Ok(ids)
        })
    }

    /// The app's builds, oldest first.
    pub fn builds(&self, app: &AppName) -> Result<Vec<Build>, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM builds b JOIN apps a ON a.uuid = b.app_uuid \
                 WHERE a.name = ?1 ORDER BY b.created_at, b.rowid"
            ))?;
            let rows = stmt
                .query_map([app.as_str()], build_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// One build of the app, by id.
    pub fn build(&self, app: &AppName, id: &str) -> Result<Build, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            find(conn, id)?
                .filter(|b| b.app == app.as_str())
                .ok_or_else(|| {
                    StateError::not_found(format!(
                        "no build {id} of {app}; see `dyno builds -a {app}`"
                    ))
                })
        })
    }

    /// The build whose output secret is `secret`.
    pub fn build_by_output_secret(&self, secret: &str) -> Result<Build, StateError> {
        self.read(|conn| {
            conn.query_row(
                &format!(
                    "SELECT {COLUMNS} FROM builds b JOIN apps a ON a.uuid = b.app_uuid \
                     WHERE b.output_secret = ?1"
                ),
                [secret],
                build_from_row,
            )
            .optional()?
            .ok_or_else(|| StateError::not_found("no such build output".to_string()))
        })
    }

    /// The app's buildpacks, in order (empty: detection).
    pub fn buildpacks(&self, app: &AppName) -> Result<Vec<String>, StateError> {
        self.read(|conn| {
            let owner = super::apps::require_app(conn, app)?;
            buildpacks_of(conn, &owner.uuid)
        })
    }

    /// Replaces the app's buildpacks.
    pub fn set_buildpacks(
        &mut self,
        app: &AppName,
        urls: &[String],
    ) -> Result<Vec<String>, StateError> {
        self.write(|tx, _| {
            let owner = super::apps::require_app(tx, app)?;
            tx.execute(
                "DELETE FROM buildpack_installations WHERE app_uuid = ?1",
                [&owner.uuid],
            )?;
            for (ordinal, url) in urls.iter().enumerate() {
                tx.execute(
                    "INSERT INTO buildpack_installations (app_uuid, ordinal, url) \
                     VALUES (?1, ?2, ?3)",
                    params![owner.uuid, ordinal as i64, url],
                )?;
            }
            buildpacks_of(tx, &owner.uuid)
        })
    }
}

fn buildpacks_of(conn: &Connection, app_uuid: &str) -> Result<Vec<String>, StateError> {
    let mut stmt = conn
        .prepare("SELECT url FROM buildpack_installations WHERE app_uuid = ?1 ORDER BY ordinal")?;
    let rows = stmt
        .query_map([app_uuid], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(rows)
}
