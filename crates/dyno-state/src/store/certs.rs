//! SNI endpoints: an app's certificates and keys. The store keeps them as uploaded; checking
//! them (PEM, key match, expiry) is the caller's, before it writes.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::SniEndpoint;
use crate::validate::AppName;

const COLUMNS: &str = "s.id, s.name, a.name, s.certificate_chain, s.private_key, s.created_at, \
                       s.updated_at";

fn endpoint_from_row(r: &Row<'_>) -> rusqlite::Result<SniEndpoint> {
    Ok(SniEndpoint {
        id: r.get(0)?,
        name: r.get(1)?,
        app: r.get(2)?,
        certificate_chain: r.get(3)?,
        private_key: r.get(4)?,
        created_at_ms: r.get(5)?,
        updated_at_ms: r.get(6)?,
    })
}

fn endpoints_of(conn: &Connection, app: &AppName) -> Result<Vec<SniEndpoint>, StateError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM sni_endpoints s JOIN apps a ON a.uuid = s.app_uuid \
         WHERE a.name = ?1 ORDER BY s.created_at, s.rowid"
    ))?;
    let rows = stmt
        .query_map([app.as_str()], endpoint_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// The app's endpoint named by its name or id.
fn find(conn: &Connection, app: &AppName, which: &str) -> Result<SniEndpoint, StateError> {
    conn.query_row(
        &format!(
            "SELECT {COLUMNS} FROM sni_endpoints s JOIN apps a ON a.uuid = s.app_uuid \
             WHERE a.name = ?1 AND (s.name = ?2 OR s.id = ?2)"
        ),
        params![app.as_str(), which],
        endpoint_from_row,
    )
    .optional()?
    .ok_or_else(|| {
        StateError::not_found(format!(
            "no SSL certificate {which} on {app}; see `heroku certs -a {app}`"
        ))
    })
}

impl Store {
    /// `certs:add`: a new endpoint with a fresh id and name.
    pub fn add_sni_endpoint(
        &mut self,
        app: &AppName,
        certificate_chain: &str,
        private_key: &str,
    ) -> Result<SniEndpoint, StateError> {
        let id = crate::ids::uuid_v4();
        let name = format!("sni-{}", &id[..8]);
        self.write(|tx, _| {
            let owner = super::apps::require_app(tx, app)?;
            let now = now_ms();
            tx.execute(
                "INSERT INTO sni_endpoints (id, name, app_uuid, certificate_chain, private_key, \
                 created_at, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
                params![id, name, owner.uuid, certificate_chain, private_key, now],
            )?;
            find(tx, app, &id)
        })
    }

    /// The app's endpoints, oldest first.
    pub fn sni_endpoints(&self, app: &AppName) -> Result<Vec<SniEndpoint>, StateError> {
        self.read(|conn| {
            super::apps::require_app(conn, app)?;
            endpoints_of(conn, app)
        })
    }

    /// Every app's endpoints (the router's certificates at start).
    pub fn all_sni_endpoints(&self) -> Result<Vec<SniEndpoint>, StateError> {
        self.read(|conn| {
            let mut stmt = conn.prepare(&format!(
                "SELECT {COLUMNS} FROM sni_endpoints s JOIN apps a ON a.uuid = s.app_uuid \
                 ORDER BY a.name, s.created_at, s.rowid"
            ))?;
            let rows = stmt
                .query_map([], endpoint_from_row)?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }

    /// `certs:update`: a new chain and key for the endpoint (by name or id).
    pub fn update_sni_endpoint(
        &mut self,
        app: &AppName,
        which: &str,
        certificate_chain: &str,
        private_key: &str,
    ) -> Result<SniEndpoint, StateError> {
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let found = find(tx, app, which)?;
            tx.execute(
                "UPDATE sni_endpoints SET certificate_chain = ?1, private_key = ?2, \
                 updated_at = ?3 WHERE id = ?4",
                params![certificate_chain, private_key, now_ms(), found.id],
            )?;
            find(tx, app, &found.id)
        })
    }

    /// `certs:remove`: the endpoint as it was.
    pub fn remove_sni_endpoint(
        &mut self,
        app: &AppName,
        which: &str,
    ) -> Result<SniEndpoint, StateError> {
        self.write(|tx, _| {
            super::apps::require_app(tx, app)?;
            let found = find(tx, app, which)?;
            tx.execute("DELETE FROM sni_endpoints WHERE id = ?1", [&found.id])?;
            Ok(found)
        })
    }
}
