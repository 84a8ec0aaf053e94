//! Bounds on client connections: at most so many per client address and so many in all, so
//! that one client cannot take every file the router may open (the router is the only way in).
//!
//! A connection is *idle* while it waits for a request head and has received none of it: a new
//! connection that has sent nothing yet, or a keep-alive connection between requests. When a
//! bound is reached, a new connection takes the place of the **oldest idle** one (of the same
//! client for the per-client bound, of anyone for the total), which is closed as an idle
//! timeout would close it. When nothing is idle the new connection is refused (closed at once):
//! requests in progress are never cut. HTTP/2 connections count, but are never idle here.
//!
//! Marking a connection idle or busy happens on every request, so it is one atomic store;
//! only a new connection at a bound looks through the open ones for the oldest idle.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// `idle_since` of a connection that is not idle.
const BUSY: u64 = 0;

/// The bounds and who holds what.
pub(crate) struct ClientLimits {
    per_client: usize,
    total: usize,
    /// Orders the moments connections turn idle (the oldest idle has the lowest number).
    clock: AtomicU64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    next: u64,
    open: HashMap<u64, Open>,
    per_client: HashMap<IpAddr, usize>,
    refused: Refusals,
}

struct Open {
    client: IpAddr,
    /// When it turned idle ([`ClientLimits::clock`]), or [`BUSY`].
    idle_since: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// A client connection's place; given back when dropped.
pub(crate) struct ClientSlot {
    limits: Arc<ClientLimits>,
    id: u64,
    idle_since: Arc<AtomicU64>,
    close: Arc<Notify>,
}

/// Refused connections, for a warning at most every [`WARN_EVERY`] rather than one per refusal.
#[derive(Default)]
struct Refusals {
    since_warning: u64,
    warned: Option<Instant>,
}

const WARN_EVERY: Duration = Duration::from_secs(10);

impl ClientLimits {
    pub(crate) fn new(per_client: usize, total: usize) -> ClientLimits {
        ClientLimits {
            per_client: per_client.max(1),
            total: total.max(1),
            clock: AtomicU64::new(BUSY + 1),
            state: Mutex::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a new connection from `client`, closing the oldest idle connection that
    /// stands in its way; `None` when the bound is reached and nothing is idle.
    pub(crate) fn admit(self: &Arc<Self>, client: IpAddr) -> Option<ClientSlot> {
        let mut state = self.state();
        if state.per_client.get(&client).copied().unwrap_or(0) >= self.per_client
            && !state.evict_oldest_idle(Some(client))
        {
            state.refused(client, "its own", self.per_client);
            return None;
        }
        if state.open.len() >= self.total && !state.evict_oldest_idle(None) {
            state.refused(client, "all clients'", self.total);
            return None;
        }
        let id = state.next;
        state.next += 1;
        let idle_since = Arc::new(AtomicU64::new(BUSY));
        let close = Arc::new(Notify::new());
        state.open.insert(
            id,
            Open {
                client,
                idle_since: idle_since.clone(),
                close: close.clone(),
            },
        );
        *state.per_client.entry(client).or_default() += 1;
        Some(ClientSlot {
            limits: self.clone(),
            id,
            idle_since,
            close,
        })
    }
}

impl State {
    /// Closes the oldest idle connection (of `client`, or of anyone) and frees its place at
    /// once; false when there is none.
    fn evict_oldest_idle(&mut self, client: Option<IpAddr>) -> bool {
        let oldest = self
            .open
            .iter()
            .filter(|(_, open)| client.is_none_or(|c| c == open.client))
            .map(|(&id, open)| (open.idle_since.load(Ordering::Relaxed), id))
            .filter(|&(since, _)| since != BUSY)
            .min();
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(open) = self.forget(id) {
            open.close.notify_one();
        }
        true
    }

    /// Removes connection `id` from every count.
    fn forget(&mut self, id: u64) -> Option<Open> {
        let open = self.open.remove(&id)?;
        if let Some(count) = self.per_client.get_mut(&open.client) {
            *count -= 1;
            if *count == 0 {
                self.per_client.remove(&open.client);
            }
        }
        Some(open)
    }

    fn refused(&mut self, client: IpAddr, whose: &str, bound: usize) {
        let refused = &mut self.refused;
        refused.since_warning += 1;
        if refused.warned.is_none_or(|at| at.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                %client,
                refused = refused.since_warning,
                "connection refused: {whose} connection bound ({bound}) is reached and none \
                 is idle (this count since the last warning)"
            );
            refused.since_warning = 0;
            refused.warned = Some(Instant::now());
        }
    }
}

impl ClientSlot {
    /// The connection waits for a request and has none of it: it may be closed for a new one.
    pub(crate) fn idle(&self) {
        let now = self.limits.clock.fetch_add(1, Ordering::Relaxed);
        self.idle_since.store(now, Ordering::Relaxed);
    }

    /// A request has begun: the connection is no longer idle.
    pub(crate) fn busy(&self) {
        self.idle_since.store(BUSY, Ordering::Relaxed);
    }

    /// Resolves once the connection was chosen to make room (it was idle then).
    pub(crate) async fn closed_for_another(&self) {
        self.close.notified().await
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.limits.state().forget(self.id);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    /// Whether the connection was told to close (a `Notify` permit waits for it).
    fn closed(slot: &ClientSlot) -> bool {
        let mut notified = std::pin::pin!(slot.close.notified());
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        notified.as_mut().poll(&mut cx).is_ready()
    }

    #[test]
    fn a_client_at_its_bound_takes_the_place_of_its_oldest_idle_connection() {
        let limits = Arc::new(ClientLimits::new(3, 100));
        let a: Vec<ClientSlot> = (0..3).map(|_| limits.admit(ip(1)).unwrap()).collect();
        a[1].idle();
        a[2].idle();
        a[0].idle();
        // Another client is not counted against this one.
        let other = limits.admit(ip(2)).unwrap();
        other.idle();
        let fourth = limits.admit(ip(1)).expect("an idle connection makes room");
        assert!(
            closed(&a[1]),
            "the oldest idle connection of that client is closed"
        );
        assert!(!closed(&a[2]) && !closed(&a[0]) && !closed(&other));
        drop(fourth);
    }

    #[test]
    fn with_nothing_idle_a_new_connection_is_refused_and_busy_ones_stay() {
        let limits = Arc::new(ClientLimits::new(2, 100));
        let a = limits.admit(ip(1)).unwrap();
        let b = limits.admit(ip(1)).unwrap();
        a.idle();
        a.busy(); // A request began: no longer idle.
        assert!(limits.admit(ip(1)).is_none());
        assert!(!closed(&a) && !closed(&b));
        // A closed connection gives its place back.
        drop(b);
        assert!(limits.admit(ip(1)).is_some());
    }

    #[test]
    fn at_the_total_bound_the_oldest_idle_connection_of_anyone_goes() {
        let limits = Arc::new(ClientLimits::new(10, 3));
        let a = limits.admit(ip(1)).unwrap();
        let b = limits.admit(ip(2)).unwrap();
        let c = limits.admit(ip(3)).unwrap();
        b.idle();
        c.idle();
        let d = limits.admit(ip(4)).expect("an idle connection makes room");
        assert!(closed(&b) && !closed(&c) && !closed(&a));
        // The evicted one's slot, dropped later, does not free a second place.
        drop(b);
        let e = limits.admit(ip(5)).expect("c is idle");
        assert!(closed(&c));
        assert!(limits.admit(ip(6)).is_none(), "a, d and e are busy");
        drop((a, d, e));
    }
}
