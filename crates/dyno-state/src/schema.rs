//! The schema as a list of migrations. `PRAGMA user_version` says how many have run; each runs
//! in its own transaction together with the bump of `user_version`, so a crash leaves the
//! database at one version or the next, never between.
//!
//! Append new migrations at the end; never edit one that has shipped.

use rusqlite::{Connection, TransactionBehavior};

use crate::error::StateError;
use std::path::Path;

pub const MIGRATIONS: &[&str] = &[V1, V2, SNI_ENDPOINTS, RELEASE_STATUS_AND_PREBOOT, BUILDS];

/// The schema version this build writes.
pub fn latest() -> i64 {
    MIGRATIONS.len() as i64
}

const V1: &str = r#"
CREATE TABLE apps (
    name            TEXT PRIMARY KEY,
    created_at      INTEGER NOT NULL,
    maintenance     INTEGER NOT NULL DEFAULT 0 CHECK (maintenance IN (0, 1)),
    metrics_enabled INTEGER NOT NULL DEFAULT 0 CHECK (metrics_enabled IN (0, 1)),
    stack           TEXT NOT NULL
) STRICT;

-- Immutable (see the trigger): a change is a new release.
CREATE TABLE releases (
    app           TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    version       INTEGER NOT NULL CHECK (version >= 1),
    created_at    INTEGER NOT NULL,
    description   TEXT NOT NULL,
    slug_path     TEXT,
    slug_digest   TEXT,
    process_types TEXT NOT NULL,   -- JSON object: type -> command
    config        TEXT NOT NULL,   -- JSON object: key -> value, the vars this release runs with
    PRIMARY KEY (app, version),
    CHECK ((slug_path IS NULL) = (slug_digest IS NULL))
) STRICT;

CREATE TRIGGER releases_are_immutable BEFORE UPDATE ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;

-- The current config vars (the latest release holds the same as a snapshot).
CREATE TABLE config_vars (
    app   TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    key   TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (app, key)
) STRICT;

-- One row per process type of the current release.
CREATE TABLE formation (
    app          TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    process_type TEXT NOT NULL,
    quantity     INTEGER NOT NULL CHECK (quantity >= 0),
    size         TEXT NOT NULL,
    PRIMARY KEY (app, process_type)
) STRICT;

-- Dynos, written BEFORE their resources exist (state 'starting', with netns and link names and,
-- through leases, the address), marked 'stopping' before teardown, deleted after it. `app` has
-- no foreign key: the rows of a destroyed app's dynos stay until their teardown is done.
-- AUTOINCREMENT: ids, and so netns and link names, are never reused.
CREATE TABLE dynos (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    app              TEXT NOT NULL,
    name             TEXT NOT NULL,
    process_type     TEXT NOT NULL,
    release_version  INTEGER NOT NULL,
    size             TEXT NOT NULL,
    state            TEXT NOT NULL
                     CHECK (state IN ('starting', 'up', 'crashed', 'down', 'stopping')),
    uuid             TEXT NOT NULL UNIQUE,
    net_name         TEXT NOT NULL UNIQUE,
    netns            TEXT NOT NULL UNIQUE,
    link             TEXT NOT NULL UNIQUE,
    shim_pid         INTEGER,
    created_at       INTEGER NOT NULL,
    state_changed_at INTEGER NOT NULL,
    started_at       INTEGER,
    exit_status      INTEGER,
    exited_at        INTEGER
) STRICT;
CREATE INDEX dynos_by_app ON dynos(app, name);

-- IPv4 leases (address as an integer). A dyno's lease goes with its row.
CREATE TABLE leases (
    ip        INTEGER PRIMARY KEY CHECK (ip BETWEEN 0 AND 4294967295),
    owner     TEXT NOT NULL,
    dyno_id   INTEGER UNIQUE REFERENCES dynos(id) ON DELETE CASCADE,
    leased_at INTEGER NOT NULL
) STRICT;

-- Small singletons: 'ipam_last' (the last address handed out, round-robin goes on after it).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

CREATE TABLE drains (
    token      TEXT PRIMARY KEY,   -- d.<uuid>, as Heroku
    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,
    url        TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (app, url)
) STRICT;
"#;

/// A random version-4 UUID in SQL, new for every row of `apps` (the `apps.name` term keeps SQLite
/// from computing the subquery once for all rows).
macro_rules! sql_uuid_v4 {
    () => {
        "(SELECT lower(substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-4' || substr(h, 14, 3) || '-'
                || substr('89ab', 1 + (abs(random()) % 4), 1) || substr(h, 18, 3) || '-'
                || substr(h, 21, 12))
          FROM (SELECT hex(randomblob(16)) || substr(apps.name, 1, 0) AS h))"
    };
}

/// Heroku's ids: every app has a UUID that stays when it is renamed (the Platform API names an
/// app by either), and the store's one account has one. And custom domains.
const V2: &str = concat!(
    "ALTER TABLE apps ADD COLUMN uuid TEXT;\n",
    "UPDATE apps SET uuid = ",
    sql_uuid_v4!(),
    ";\n",
    "CREATE UNIQUE INDEX apps_by_uuid ON apps(uuid);\n",
    "CREATE TRIGGER apps_have_a_uuid BEFORE INSERT ON apps WHEN NEW.uuid IS NULL\n",
    "BEGIN SELECT RAISE(ABORT, 'an app needs a uuid'); END;\n",
    "INSERT INTO meta (key, value) SELECT 'account_uuid', lower(hex(randomblob(16)));\n",
    // Custom domains: one app per hostname (the router sends the name's requests to it).
    "CREATE TABLE domains (\n",
    "    hostname   TEXT PRIMARY KEY,\n",
    "    app        TEXT NOT NULL REFERENCES apps(name) ON DELETE CASCADE,\n",
    "    created_at INTEGER NOT NULL\n",
    ") STRICT;\n",
    "CREATE INDEX domains_by_app ON domains(app);\n",
);

/// Heroku's SNI endpoints: an app's certificate chains and keys, served by the router's TLS
/// listener for the names they cover. Keyed to the app's uuid, so a rename keeps them; the key
/// is stored as uploaded (the data dir is the daemon's alone).
const SNI_ENDPOINTS: &str = "
CREATE TABLE sni_endpoints (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    app_uuid          TEXT NOT NULL REFERENCES apps(uuid) ON DELETE CASCADE,
    certificate_chain TEXT NOT NULL,
    private_key       TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL
) STRICT;
CREATE INDEX sni_endpoints_by_app ON sni_endpoints(app_uuid);
";

/// Heroku's release status and the `preboot` app feature. A release whose release phase runs
/// is `pending` until the command ends, then `succeeded` or `failed` (kept, shown by `heroku
/// releases`; the app's current release stays the newest succeeded one). Rows made before are
/// `succeeded`. A release's content stays immutable; its status changes once, from `pending`;
/// its `app` follows a rename. `preboot`: new web dynos take traffic before the old ones stop
/// (off: they restart in place).
const RELEASE_STATUS_AND_PREBOOT: &str = r#"
ALTER TABLE releases ADD COLUMN status TEXT NOT NULL DEFAULT 'succeeded'
    CHECK (status IN ('pending', 'succeeded', 'failed'));
DROP TRIGGER releases_are_immutable;
CREATE TRIGGER releases_are_immutable
BEFORE UPDATE OF version, created_at, description, slug_path, slug_digest, process_types, config
ON releases
BEGIN
    SELECT RAISE(ABORT, 'releases are immutable');
END;
CREATE TRIGGER release_status_settles_once BEFORE UPDATE OF status ON releases
WHEN OLD.status != 'pending' OR NEW.status = 'pending'
BEGIN
    SELECT RAISE(ABORT, 'a release status changes once, from pending');
END;
ALTER TABLE apps ADD COLUMN preboot INTEGER NOT NULL DEFAULT 0 CHECK (preboot IN (0, 1));
"#;

/// Builds (Heroku's `/apps/{app}/builds`) and the app's buildpacks (`heroku buildpacks`),
/// keyed to the app's uuid so a rename keeps them. At most one build of an app is `pending`
/// (the partial unique index): a second push waits for none, it is refused. A build's status
/// changes once, from `pending`. Its output is a file of the data dir, not a row.
const BUILDS: &str = r#"
CREATE TABLE builds (
    id              TEXT PRIMARY KEY,
    app_uuid        TEXT NOT NULL REFERENCES apps(uuid) ON DELETE CASCADE,
    status          TEXT NOT NULL CHECK (status IN ('pending', 'succeeded', 'failed')),
    source_url      TEXT NOT NULL,
    source_version  TEXT,
    buildpacks      TEXT NOT NULL,   -- JSON array of the buildpack URLs it ran
    output_secret   TEXT NOT NULL UNIQUE,
    release_version INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL
) STRICT;
CREATE INDEX builds_by_app ON builds(app_uuid, created_at);
CREATE UNIQUE INDEX one_pending_build_per_app ON builds(app_uuid) WHERE status = 'pending';
CREATE TRIGGER build_status_settles_once BEFORE UPDATE OF status ON builds
WHEN OLD.status != 'pending' OR NEW.status = 'pending'
BEGIN
    SELECT RAISE(ABORT, 'a build status changes once, from pending');
END;
CREATE TABLE buildpack_installations (
    app_uuid TEXT NOT NULL REFERENCES apps(uuid) ON DELETE CASCADE,
    ordinal  INTEGER NOT NULL CHECK (ordinal >= 0),
    url      TEXT NOT NULL,
    PRIMARY KEY (app_uuid, ordinal)
) STRICT;
"#;

/// Runs the migrations the database has not seen yet.
pub fn migrate(conn: &mut Connection, db_path: &Path) -> Result<(), StateError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StateError::SchemaTooNew {
            path: db_path.to_path_buf(),
            found: current,
            known: latest(),
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", (i + 1) as i64)?;
        tx.commit()?;
    }
    Ok(())
}

/// Whether a database at `current` can be used as it is (read-only mode cannot migrate).
pub fn check_current(conn: &Connection, db_path: &Path) -> Result<bool, StateError> {
    let current: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(StateError::SchemaTooNew {
            path: db_path.to_path_buf(),
            found: current,
            known: latest(),
        });
    }
    Ok(current == latest())
}
