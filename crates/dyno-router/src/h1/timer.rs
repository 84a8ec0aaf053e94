//! A per-connection deadline timer that is cheap to move.
//!
//! Every request has deadlines (head read, `H12`, idle), and most are met. Arming a tokio timer
//! per phase costs a wheel insert and removal each time; instead the connection keeps one
//! `Sleep` armed at most `step` ahead and checks the real deadline only when it fires. Moving a
//! deadline later is then free; the timer is re-armed only when it fires early or a deadline
//! moves earlier than where it is armed.

use std::pin::Pin;
use std::time::Duration;

use tokio::time::{Instant, Sleep};

pub(crate) struct Timer {
    sleep: Pin<Box<Sleep>>,
    armed: Instant,
    step: Duration,
}

impl Timer {
    /// `step`: the shortest timeout the connection uses (how far ahead the timer is armed).
    pub(crate) fn new(step: Duration) -> Self {
        let armed = Instant::now() + step;
        Self {
            sleep: Box::pin(tokio::time::sleep_until(armed)),
            armed,
            step: step.max(Duration::from_millis(1)),
        }
    }

    fn arm(&mut self, at: Instant) {
        self.armed = at;
        self.sleep.as_mut().reset(at);
    }

    /// Resolves once `deadline` has passed.
    pub(crate) async fn until(&mut self, deadline: Instant) {
        if self.armed > deadline {
            self.arm(deadline);
        }
        loop {
            self.sleep.as_mut().await;
            let now = Instant::now();
            if now >= deadline {
                return;
            }
            self.arm(deadline.min(now + self.step));
        }
    }

    /// `fut`, or `None` if `deadline` passes first.
    pub(crate) async fn within<F: std::future::Future>(
        &mut self,
        deadline: Instant,
        fut: F,
    ) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = fut => Some(out),
            () = self.until(deadline) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn fires_at_the_deadline_not_at_the_step() {
        let mut t = Timer::new(Duration::from_millis(20));
        let start = Instant::now();
        t.until(start + Duration::from_millis(70)).await;
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(70), "{took:?}");
        assert!(took < Duration::from_millis(500), "{took:?}");
        // A deadline earlier than the armed one is honoured.
        let start = Instant::now();
        let got = t
            .within(
                start + Duration::from_millis(5),
                std::future::pending::<()>(),
            )
            .await;
        assert!(got.is_none());
        assert!(start.elapsed() < Duration::from_millis(300));
        assert_eq!(t.within(start, async { 7 }).await, Some(7));
    }
}
