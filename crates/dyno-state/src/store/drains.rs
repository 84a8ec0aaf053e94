//! Log drains: where an app's log lines are also sent.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::Drain;
use crate::validate::{AppName, DrainUrl};

fn drain_from_row(r: &Row<'_>) -> rusqlite::Result<Drain> {
    let url: String = r.get(2)?;
    Ok(Drain {
        token: r.get(0)?,
        app: r.get(1)?,
        url: DrainUrl::parse(&url).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
        })?,
        created_at_ms: r.get(3)?,
    })
}

pub(super) fn drains_of(conn: &Connection, app: &str) -> Result<Vec<Drain>, StateError> {
    let mut stmt = conn
        .prepare("SELECT token, app, url, created_at FROM drains WHERE app = ?1 ORDER BY rowid")?;
    let rows = stmt
        .query_map([app], drain_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

impl Store {
    /// `drains:add URL`: returns the drain with its new token `d.<uuid>`.
    pub fn add_drain(&mut self, app: &AppName, url: &DrainUrl) -> Result<Drain, StateError> {
        let token = format!("d.{}", crate::ids::uuid_v4());
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let exists: bool = tx.query_row(
                "SELECT EXISTS (SELECT 1 FROM drains WHERE app = ?1 AND url = ?2)",
                params![app.as_str(), url.as_str()],
                |r| r.get(0),
            )?;
            if exists {
                return Err(StateError::conflict(format!(
                    "app {app} already drains to {url}; see `dyno drains -a {app}`"
                )));
            }
            let created_at_ms = now_ms();
            tx.execute(
                "INSERT INTO drains (token, app, url, created_at) VALUES (?1, ?2, ?3, ?4)",
                params![token, app.as_str(), url.as_str(), created_at_ms],
            )?;
            Ok(Drain {
                token: token.clone(),
                app: app.to_string(),
                url: url.clone(),
                created_at_ms,
            })
        })
    }

    pub fn drains(&self, app: &AppName) -> Result<Vec<Drain>, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            drains_of(conn, app.as_str())
        })
    }

    /// `drains:remove URL_OR_TOKEN`: by its URL or its `d.<uuid>` token.
    pub fn remove_drain(&mut self, app: &AppName, url_or_token: &str) -> Result<Drain, StateError> {
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let found = tx
                .query_row(
                    "SELECT token, app, url, created_at FROM drains
                     WHERE app = ?1 AND (token = ?2 OR url = ?2)",
                    params![app.as_str(), url_or_token],
                    drain_from_row,
                )
                .optional()?;
            let Some(drain) = found else {
                return Err(StateError::not_found(format!(
                    "app {app} has no drain {}; see `dyno drains -a {app}`",
                    crate::validate::shown(url_or_token)
                )));
            };
            tx.execute("DELETE FROM drains WHERE token = ?1", [&drain.token])?;
            Ok(drain)
        })
    }
}
