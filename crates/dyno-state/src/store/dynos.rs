//! Dyno rows (the intent record for every live resource) and address leases.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use ipnet::Ipv4Net;
use rusqlite::{params, Connection, OptionalExtension, Params, Row};

use super::{now_ms, Store};
use crate::error::StateError;
use crate::model::{Dyno, DynoState, DynoUpdate, Lease, NewDyno};
use crate::validate::{ProcessType, ValidationError};

const DYNO_COLUMNS: &str = "d.id, d.app, d.name, d.process_type, d.release_version, d.size,
    d.state, d.uuid, d.net_name, d.netns, d.link, l.ip, d.shim_pid, d.created_at,
    d.state_changed_at, d.started_at, d.exit_status, d.exited_at";

fn dyno_from_row(r: &Row<'_>) -> rusqlite::Result<Dyno> {
    let state: String = r.get(6)?;
    Ok(Dyno {
        id: r.get(0)?,
        app: r.get(1)?,
        name: r.get(2)?,
        process_type: r.get(3)?,
        release_version: r.get(4)?,
        size: r.get(5)?,
        state: state.parse().map_err(|e: ValidationError| {
            rusqlite::Error::FromSqlConversionFailure(6, rusqlite::types::Type::Text, e.into())
        })?,
        uuid: r.get(7)?,
        net_name: r.get(8)?,
        netns: r.get(9)?,
        link: r.get(10)?,
        address: r.get::<_, Option<u32>>(11)?.map(Ipv4Addr::from),
        shim_pid: r.get(12)?,
        created_at_ms: r.get(13)?,
        state_changed_at_ms: r.get(14)?,
        started_at_ms: r.get(15)?,
        exit_status: r.get(16)?,
        exited_at_ms: r.get(17)?,
    })
}

pub(super) fn dynos_where<P: Params>(
    conn: &Connection,
    condition: &str,
    params: P,
) -> Result<Vec<Dyno>, StateError> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {DYNO_COLUMNS} FROM dynos d LEFT JOIN leases l ON l.dyno_id = d.id
         WHERE {condition} ORDER BY d.id"
    ))?;
    let rows = stmt
        .query_map(params, dyno_from_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn dyno_by_id(conn: &Connection, id: i64) -> Result<Dyno, StateError> {
    dynos_where(conn, "d.id = ?1", [id])?
        .pop()
        .ok_or_else(|| StateError::not_found(format!("no dyno with id {id}")))
}

impl Store {
    /// Records a dyno **before** any of its resources exist: state `starting`, its netns and
    /// link names, its hostname, and its address (leased in the same transaction). After a
    /// crash, reconcile finds here everything it may have to adopt or remove.
    pub fn insert_dyno(&mut self, new: &NewDyno) -> Result<Dyno, StateError> {
        if new.process_type != ProcessType::RUN {
            ProcessType::parse(&new.process_type)?;
        }
        for (what, name) in [
            ("net_name", &new.net.net_name),
            ("netns", &new.net.netns),
            ("link", &new.net.link),
        ] {
            check_resource_name(what, name)?;
        }
        if new.index == 0 {
            return Err(ValidationError::new("dyno", "dyno numbers start at 1 (web.1)").into());
        }
        let uuid = crate::ids::uuid_v4();
        self.write(|tx, options| {
            super::apps::require_app(tx, &new.app)?;
            let release = super::releases::release_at(tx, new.app.as_str(), new.release_version)?;
            if new.process_type != ProcessType::RUN
                && !release.process_types.contains_key(&new.process_type)
            {
                return Err(StateError::not_found(format!(
                    "no such process type {} in the Procfile of {} v{}",
                    new.process_type, new.app, new.release_version
                )));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO dynos (app, name, process_type, release_version, size, state, uuid,
                     net_name, netns, link, created_at, state_changed_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, 'starting', ?6, ?7, ?8, ?9, ?10, ?10)",
                params![
                    new.app.as_str(),
                    format!("{}.{}", new.process_type, new.index),
                    new.process_type,
                    new.release_version,
                    new.size.as_str(),
                    uuid,
                    new.net.net_name,
                    new.net.netns,
                    new.net.link,
                    now,
                ],
            )?;
            let id = tx.last_insert_rowid();
            alloc_ip(tx, options.pool, &new.net.net_name, Some(id))?;
            dyno_by_id(tx, id)
        })
    }

    /// Records what happened to a dyno. A `stopping` dyno stays `stopping` (its teardown is
    /// under way) until [`Store::remove_dyno`].
    pub fn update_dyno(&mut self, id: i64, update: &DynoUpdate) -> Result<Dyno, StateError> {
        self.write(|tx, _| {
            let dyno = dyno_by_id(tx, id)?;
            let now = now_ms();
            if let Some(state) = update.state {
                if dyno.state == DynoState::Stopping && state != DynoState::Stopping {
                    return Err(StateError::conflict(format!(
                        "dyno {} of {} is being torn down and cannot become {state}",
                        dyno.name, dyno.app
                    )));
                }
                if state != dyno.state {
                    tx.execute(
                        "UPDATE dynos SET state = ?2, state_changed_at = ?3 WHERE id = ?1",
                        params![id, state.as_str(), now],
                    )?;
                }
                if state == DynoState::Up && dyno.state != DynoState::Up {
                    tx.execute(
                        "UPDATE dynos SET started_at = ?2 WHERE id = ?1",
                        params![id, now],
                    )?;
                }
            }
            if let Some(pid) = update.shim_pid {
                tx.execute(
                    "UPDATE dynos SET shim_pid = ?2 WHERE id = ?1",
                    params![id, pid],
                )?;
            }
            if let Some(status) = update.exit_status {
                tx.execute(
                    "UPDATE dynos SET exit_status = ?2, exited_at = ?3 WHERE id = ?1",
                    params![id, status, now],
                )?;
            }
            dyno_by_id(tx, id)
        })
    }

    /// Deletes a dyno's row and its lease, once its resources are gone. The dyno must be
    /// `stopping` (the teardown intent must have been recorded first).
    pub fn remove_dyno(&mut self, id: i64) -> Result<Dyno, StateError> {
        self.write(|tx, _| {
            let dyno = dyno_by_id(tx, id)?;
            if dyno.state != DynoState::Stopping {
                return Err(StateError::conflict(format!(
                    "dyno {} of {} is {}: mark it stopping before tearing it down and removing it",
                    dyno.name, dyno.app, dyno.state
                )));
            }
            tx.execute("DELETE FROM dynos WHERE id = ?1", [id])?;
            Ok(dyno)
        })
    }

    pub fn dyno(&self, id: i64) -> Result<Dyno, StateError> {
        self.read(|conn| dyno_by_id(conn, id))
    }

    /// The dynos recorded for `app` (including `stopping` ones), oldest first.
    pub fn dynos(&self, app: &crate::validate::AppName) -> Result<Vec<Dyno>, StateError> {
        self.read(|conn| dynos_where(conn, "d.app = ?1", [app.as_str()]))
    }

    /// Every dyno row, of every app and of destroyed apps: what reconcile compares with
    /// `/run/netns`, host links, cgroups and shims.
    pub fn all_dynos(&self) -> Result<Vec<Dyno>, StateError> {
        self.read(|conn| dynos_where(conn, "1", []))
    }

    /// Every slug path a release refers to; any other directory in [`Store::slugs_dir`] is
    /// garbage (a deploy that crashed before its release was recorded, or a destroyed app).
    pub fn referenced_slugs(&self) -> Result<BTreeSet<PathBuf>, StateError> {
        self.read(|conn| {
            let mut stmt = conn
                .prepare("SELECT DISTINCT slug_path FROM releases WHERE slug_path IS NOT NULL")?;
            let paths = stmt
                .query_map([], |r| r.get::<_, String>(0))?
                .map(|p| p.map(PathBuf::from))
                .collect::<Result<BTreeSet<_>, _>>()?;
            Ok(paths)
        })
    }

    /// Leases an address from the pool for `owner` (not a dyno: dynos get theirs in
    /// [`Store::insert_dyno`]). Round-robin: the next free address after the last one given.
    pub fn lease_alloc(&mut self, owner: &str) -> Result<Ipv4Addr, StateError> {
        check_owner(owner)?;
        self.write(|tx, options| alloc_ip(tx, options.pool, owner, None))
    }

    /// Moves dyno `id`'s lease to the next free address of the pool (round-robin goes on
    /// after the one it had): its address turned out to be another instance's on this host.
    pub fn relocate_lease(&mut self, id: i64) -> Result<Ipv4Addr, StateError> {
        self.write(|tx, options| {
            let dyno = dyno_by_id(tx, id)?;
            tx.execute("DELETE FROM leases WHERE dyno_id = ?1", [id])?;
            alloc_ip(tx, options.pool, &dyno.net_name, Some(id))
        })
    }

    /// Takes a given address for `owner` (adopting after a restart). Idempotent for the same
    /// owner; `conflict` if someone else holds it.
    pub fn lease_claim(&mut self, ip: Ipv4Addr, owner: &str) -> Result<(), StateError> {
        check_owner(owner)?;
        self.write(|tx, options| {
            if !options.pool.contains(&ip) {
                return Err(ValidationError::new(
                    "address",
                    format!("{ip} is outside the address pool {}", options.pool),
                )
                .into());
            }
            let holder: Option<String> = tx
                .query_row(
                    "SELECT owner FROM leases WHERE ip = ?1",
                    [u32::from(ip)],
                    |r| r.get(0),
                )
                .optional()?;
            match holder {
                Some(o) if o == owner => Ok(()),
                Some(o) => Err(StateError::conflict(format!("{o} already holds {ip}"))),
                None => {
                    tx.execute(
                        "INSERT INTO leases (ip, owner, leased_at) VALUES (?1, ?2, ?3)",
                        params![u32::from(ip), owner, now_ms()],
                    )?;
                    Ok(())
                }
            }
        })
    }

    /// Frees an address (a dyno's address is freed with its row instead).
    pub fn lease_release(&mut self, ip: Ipv4Addr) -> Result<(), StateError> {
        self.write(|tx, _| {
            let n = tx.execute("DELETE FROM leases WHERE ip = ?1", [u32::from(ip)])?;
            if n == 0 {
                return Err(StateError::not_found(format!(
                    "{ip} is not leased (released twice?)"
                )));
            }
            Ok(())
        })
    }

    pub fn leases(&self) -> Result<Vec<Lease>, StateError> {
        self.read(|conn| {
            let mut stmt =
                conn.prepare("SELECT ip, owner, dyno_id, leased_at FROM leases ORDER BY ip")?;
            let rows = stmt
                .query_map([], |r| {
                    Ok(Lease {
                        ip: Ipv4Addr::from(r.get::<_, u32>(0)?),
                        owner: r.get(1)?,
                        dyno_id: r.get(2)?,
                        leased_at_ms: r.get(3)?,
                    })
                })?
                .collect::<Result<Vec<_>, _>>()?;
            Ok(rows)
        })
    }
}

/// A resource name the caller chose: something a file name and a link name can be.
fn check_resource_name(what: &'static str, name: &str) -> Result<(), ValidationError> {
    if name.is_empty()
        || name.len() > 64
        || !name.bytes().all(|b| b.is_ascii_graphic() && b != b'/')
    {
        return Err(ValidationError::new(
            what,
            format!("{name:?}: 1 to 64 printable characters, no '/' or space"),
        ));
    }
    Ok(())
}

fn check_owner(owner: &str) -> Result<(), ValidationError> {
    if owner.is_empty() || owner.len() > 255 || owner.chars().any(char::is_control) {
        return Err(ValidationError::new(
            "lease owner",
            "a lease owner is 1 to 255 printable characters",
        ));
    }
    Ok(())
}

/// The first and last address dynos may get (as `dyno-net`'s IPAM: not the network and
/// broadcast addresses, unless the pool is a /31 or /32).
fn usable(pool: Ipv4Net) -> (u32, u32) {
    let first = u32::from(pool.network());
    let last = u32::from(pool.broadcast());
    if pool.prefix_len() >= 31 {
        (first, last)
    } else {
        (first + 1, last - 1)
    }
}

/// How many addresses dynos may get from `pool`.
fn capacity(pool: Ipv4Net) -> u64 {
    let (first, last) = usable(pool);
    u64::from(last - first) + 1
}

const META_LAST: &str = "ipam_last";

fn last_given(conn: &Connection) -> Result<Option<u32>, StateError> {
    let v: Option<String> = conn
        .query_row("SELECT value FROM meta WHERE key = ?1", [META_LAST], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(v.and_then(|s| s.parse::<Ipv4Addr>().ok()).map(u32::from))
}

fn set_last_given(conn: &Connection, ip: Option<Ipv4Addr>) -> Result<(), StateError> {
    match ip {
        Some(ip) => conn.execute(
            "INSERT INTO meta (key, value) VALUES (?1, ?2)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            params![META_LAST, ip.to_string()],
        )?,
        None => conn.execute("DELETE FROM meta WHERE key = ?1", [META_LAST])?,
    };
    Ok(())
}

/// Round-robin allocation inside the caller's transaction.
fn alloc_ip(
    conn: &Connection,
    pool: Ipv4Net,
    owner: &str,
    dyno_id: Option<i64>,
) -> Result<Ipv4Addr, StateError> {
    let (first, last) = usable(pool);
    let leased: i64 = conn.query_row(
        "SELECT COUNT(*) FROM leases WHERE ip BETWEEN ?1 AND ?2",
        [first, last],
        |r| r.get(0),
    )?;
    if leased as u64 >= capacity(pool) {
        return Err(StateError::PoolExhausted {
            pool: pool.to_string(),
            capacity: capacity(pool),
        });
    }
    let start = match last_given(conn)? {
        Some(prev) if prev >= first && prev < last => prev + 1,
        _ => first,
    };
    // The lowest free address in lo..=hi: lo itself, or one just after a leased address.
    let lowest_free = |lo: u32, hi: u32| -> Result<Option<u32>, StateError> {
        Ok(conn
            .query_row(
                "SELECT c FROM (SELECT ?1 AS c UNION ALL
                                SELECT ip + 1 FROM leases WHERE ip >= ?1 AND ip < ?2)
                 WHERE c <= ?2 AND c NOT IN (SELECT ip FROM leases)
                 ORDER BY c LIMIT 1",
                [lo, hi],
                |r| r.get(0),
            )
            .optional()?)
    };
    let found = match lowest_free(start, last)? {
        Some(ip) => Some(ip),
        None if start > first => lowest_free(first, start - 1)?,
        None => None,
    };
    let ip = Ipv4Addr::from(found.ok_or_else(|| StateError::PoolExhausted {
        pool: pool.to_string(),
        capacity: capacity(pool),
    })?);
    conn.execute(
        "INSERT INTO leases (ip, owner, dyno_id, leased_at) VALUES (?1, ?2, ?3, ?4)",
        params![u32::from(ip), owner, dyno_id, now_ms()],
    )?;
    set_last_given(conn, Some(ip))?;
    Ok(ip)
}
