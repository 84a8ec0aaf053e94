//! `dyno-manager`: the platform. The daemon behind `dyno serve` ([`daemon`]: apps, releases,
//! formations, convergence, the takeover after a restart, the API's operations), Procfile
//! apps ([`procfile`]), an app's web dynos in the router ([`webdynos`]), where busy dynos run
//! ([`cpu_placement`]), and `dyno up` ([`up`]).
//!
//! It decides which dynos should run; `dyno-supervisor` runs each one, `dyno-logs` keeps what
//! they write. Arrows point down: nothing below imports this crate.

pub mod cpu_placement;
pub mod daemon;
/// Ids (base 36 names, UUIDs) live with the state, which makes them too.
pub use dyno_state::ids;
pub mod procfile;
pub mod up;
pub mod webdynos;

/// Takes a std mutex, poisoned or not. Every critical section in this crate is a few map or
/// queue operations that leave the data usable when a panic cuts them short.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
