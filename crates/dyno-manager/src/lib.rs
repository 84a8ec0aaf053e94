//! `dyno-manager`: the control plane. Procfile apps ([`procfile`]), Heroku's runtime codes
//! ([`heroku`]) and log lines ([`logs`]), the log hub ([`logring`], [`logqueue`]) and its drains
//! ([`drains`]), the dyno lifecycle ([`lifecycle`], [`supervisor`]), where busy dynos
//! run ([`cpu_placement`]), and `dyno up` ([`up`]).

pub mod cpu_placement;
pub mod daemon;
pub mod drains;
/// Ids (base 36 names, UUIDs) live with the state, which makes them too.
pub use dyno_state::ids;
pub mod heroku;
pub mod lifecycle;
pub mod logqueue;
pub mod logring;
pub mod logs;
pub mod memory;
pub mod netwatch;
pub mod procfile;
pub mod supervisor;
pub mod up;
pub mod webdynos;

/// Takes a std mutex, poisoned or not. Every critical section in this crate is a few map or
/// queue operations that leave the data usable when a panic cuts them short.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
