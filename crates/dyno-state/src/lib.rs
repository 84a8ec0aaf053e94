//! The dyno daemon's durable state: apps, releases, config vars, formation, dynos, address
//! leases and log drains, in one SQLite database (`<data dir>/state.db`, default data dir
//! `/var/lib/dyno`). Nothing else: no HTTP, no processes, no network.
//!
//! # Guarantees
//!
//! - **One transaction per change.** Every `&mut self` method of [`Store`] is one `BEGIN
//!   IMMEDIATE … COMMIT`; when it returns an error, nothing was changed.
//! - **Nothing committed is lost**, by kill -9 at any instant or by power loss: WAL journal,
//!   `synchronous=FULL` (the WAL is fsynced before a commit returns). Tests SIGKILL a writer at
//!   random moments and check every change it reported as committed.
//! - **Read-only or full filesystem**: changes fail with `read_only` / `disk_full` and a message
//!   saying what to do; committed state stays intact, and reads keep working. Every change first
//!   probes the data dir (read-only, or not one free block): SQLite alone would go on committing
//!   into WAL pages it holds, or through files it holds open, so some changes would pass and
//!   others not. If the data dir is read-only at [`Store::open`], the store opens read-only
//!   ([`Store::is_read_only`]).
//! - **One daemon per data dir**: [`Store::open`] takes an exclusive `flock` on the dir
//!   (`locked` otherwise); the kernel drops it when the process dies.
//! - Every input is a validated type from [`validate`]; bad input is `invalid_params`.
//!
//! # Schema (version 1, see `schema.rs`; `PRAGMA user_version` counts migrations)
//!
//! | table | rows |
//! |---|---|
//! | `apps` | name, created_at, maintenance, metrics_enabled, stack |
//! | `releases` | (app, version) → created_at, description, slug path + `sha256:` digest, process types (JSON), config snapshot (JSON). Immutable (an UPDATE trigger aborts). |
//! | `config_vars` | (app, key) → value: the current config (equal to the newest release's snapshot) |
//! | `formation` | (app, process_type) → quantity, size: one row per type of the newest release |
//! | `dynos` | id (AUTOINCREMENT: never reused) → app, name `web.1`, process type, release, size, state, uuid (hostname), net_name (base 36 of id), netns `dyno-<net>`, link `dy<net>`, shim pid, times, last exit status |
//! | `leases` | ip (as integer) → owner, dyno_id (cascade: a dyno's lease goes with its row) |
//! | `meta` | `ipam_last`: round-robin goes on after this address |
//! | `drains` | token `d.<uuid>` → app, url |
//!
//! Times are milliseconds since the Unix epoch. Deleting an app cascades to its releases,
//! config vars, formation and drains — but not to its dynos (see below).
//!
//! Heroku semantics kept here: every app starts with v1 `Initial release`; a deploy, each
//! `config:set` / `config:unset` and each rollback is a new release (`Deploy …`,
//! `Set FOO, BAR config vars`, `Remove FOO config vars`, `Rollback to v3`); a rollback copies
//! the old release's slug, process types *and* config (and sets the app's config vars back).
//! The formation follows the newest release's process types: a new type gets a row (`web` at
//! 1 dyno, others at 0, size `Standard-1X`); a type that left the Procfile loses its row.
//!
//! # The intent-before-resource rule (for reconcile)
//!
//! Every live resource is recorded *before* it is created and forgotten only *after* it is gone:
//!
//! 1. [`Store::insert_dyno`] writes the dyno row in state `starting` with its netns name, link
//!    name, uuid and leased address — then the caller creates the netns, veth, cgroup, shim.
//! 2. [`Store::update_dyno`] records the shim pid, `up`, `crashed`, exit statuses as they happen.
//! 3. Before teardown the caller sets the state `stopping` (or [`Store::destroy_app`] does, for
//!    all dynos of the app); then it removes the resources; then [`Store::remove_dyno`] deletes
//!    the row and its lease. A `stopping` dyno never goes back.
//!
//! So after a crash, reconcile reads [`Store::all_dynos`]: a row whose resources exist is
//! adopted (or torn down if `stopping`); a row whose resources are missing is finished or
//! removed; a `dyno-*` netns, `dy*` link, cgroup or shim with no row is an orphan and removed.
//! Slugs follow the same rule the other way round: the deploy copies the slug directory into
//! [`Store::slugs_dir`] first and records the release after, so a directory there that
//! [`Store::referenced_slugs`] does not list is garbage.
//!
//! # Error ids ([`StateError::id`])
//!
//! | id | meaning | HTTP (suggested) |
//! |---|---|---|
//! | `invalid_params` | input broke a rule ([`validate::ValidationError`]) | 422 |
//! | `not_found` | no such app, release, process type, dyno, drain, config var | 404 |
//! | `conflict` | app exists, drain added twice, dyno is stopping, lease held | 409 |
//! | `read_only` | the data dir's filesystem is read-only | 503 |
//! | `disk_full` | no space left on the data dir's filesystem | 507 |
//! | `locked` | another daemon holds the data dir | 409 (at start) |
//! | `busy` | another process kept the database locked past the busy timeout | 503 |
//! | `pool_exhausted` | no free address in the pool | 503 |
//! | `corrupt` | the database file is damaged | 500 |
//! | `schema_too_new` | the database comes from a newer dyno | 500 |
//! | `internal` | anything else (I/O, SQLite) | 500 |
//!
//! Every message says what to do next; `Display` gives it.

#![forbid(unsafe_code)]

pub mod error;
pub mod ids;
pub mod model;
pub mod schema;
pub mod store;
pub mod validate;

pub use error::StateError;
pub use model::{
    App, Build, BuildStatus, Config, DestroyedApp, Drain, Dyno, DynoState, DynoUpdate,
    FormationEntry, Lease, NetNames, NewDyno, NewRelease, ProcessTypes, Release, ReleaseStatus,
    ScaleChange, Slug, SniEndpoint,
};
pub use store::{
    NewBuild, Phase, ReleaseChange, Store, StoreOptions, DB_FILE, DEFAULT_DATA_DIR, DEFAULT_POOL,
    SLUGS_DIR,
};
pub use validate::{
    AppName, ConfigKey, ConfigValue, DrainScheme, DrainTarget, DrainUrl, Hostname, ProcessType,
    Quantity, SizeName, ValidationError, DEFAULT_SIZE, SIZE_NAMES,
};
