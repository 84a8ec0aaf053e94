//! `dyno-logs`: what dyno keeps of its apps' logs. Heroku's log lines ([`logs`]), the per-app
//! hub that rings them and serves `dyno logs --tail` ([`logring`]) through bounded queues
//! ([`logqueue`]), and the drains that send them on, over syslog or HTTPS ([`drains`]).
//!
//! It knows nothing of dynos or apps beyond their names: the supervisor and the daemon write
//! lines into it, the API reads them out.

#![forbid(unsafe_code)]

pub mod drains;
pub mod logqueue;
pub mod logring;
pub mod logs;

/// Takes a std mutex, poisoned or not: every critical section here is a few map or queue
/// operations that leave the data usable when a panic cuts them short.
pub(crate) fn lock<T>(mutex: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
