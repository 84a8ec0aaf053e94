//! A bounded, single-consumer queue of log lines that never blocks its producer.
//!
//! The hub pushes every line of an app into one queue per `--tail` subscriber and per drain.
//! When the queue holds its capacity of lines the new line is dropped and counted; the count
//! comes out of the queue **at the place the lines went missing**, as an [`Item::Dropped`]
//! between the last line kept before the gap and the first line kept after it. Memory is bounded
//! by the capacity: at most `capacity` lines plus one gap marker per line.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use tokio::sync::Notify;

use crate::logs::LogLine;

/// What a consumer takes out of a [`LineQueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Line(Arc<LogLine>),
    /// `count` lines were dropped here because the consumer was too slow; the first of them was
    /// produced at `since`.
    Dropped {
        count: u64,
        since: SystemTime,
    },
}

#[derive(Debug)]
struct State {
    items: VecDeque<Item>,
    /// Lines (not markers) in `items`.
    lines: usize,
    /// Dropped since the last marker was queued, and when the first of them was produced.
    dropped: u64,
    since: Option<SystemTime>,
    closed: bool,
}

#[derive(Debug)]
pub struct LineQueue {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
}

impl LineQueue {
    /// A queue keeping at most `capacity` lines (at least 1).
    pub fn new(capacity: usize) -> LineQueue {
        LineQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                lines: 0,
                dropped: 0,
                since: None,
                closed: false,
            }),
            ready: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state inconsistent (plain pushes and
        // pops), so a poisoned lock is used as it is.
        crate::lock(&self.state)
    }

    /// Queue `line`, or drop and count it when the queue is full. Never waits.
    /// Returns whether the line was queued; a closed queue takes nothing.
    pub fn push(&self, line: Arc<LogLine>) -> bool {
        let mut s = self.lock();
        if s.closed {
            return false;
        }
        if s.lines >= self.capacity {
            s.dropped += 1;
            if s.since.is_none() {
                s.since = Some(line.time);
            }
            return false;
        }
        if s.dropped > 0 {
            let marker = Item::Dropped {
                count: std::mem::take(&mut s.dropped),
                since: s.since.take().unwrap_or(line.time),
            };
            s.items.push_back(marker);
        }
        s.items.push_back(Item::Line(line));
        s.lines += 1;
        drop(s);
        self.ready.notify_one();
        true
    }

    /// The next item without waiting. A gap at the end of the queue is reported once the lines
    /// before it are taken.
    pub fn try_pop(&self) -> Option<Item> {
        let mut s = self.lock();
        match s.items.pop_front() {
            Some(item) => {
                if matches!(item, Item::Line(_)) {
                    s.lines -= 1;
                }
                Some(item)
            }
            None if s.dropped > 0 => Some(Item::Dropped {
                count: std::mem::take(&mut s.dropped),
                since: s.since.take().unwrap_or_else(SystemTime::now),
            }),
            None => None,
        }
    }

    /// Up to `max` items at once, in order, under one lock (a drain takes its batch so, not a
    /// lock per line); the count of lines dropped since the last marker comes last.
    pub fn try_pop_many(&self, max: usize, into: &mut Vec<Item>) {
        let mut s = self.lock();
        let n = max.min(s.items.len());
        let lines = s
            .items
            .iter()
            .take(n)
            .filter(|item| matches!(item, Item::Line(_)))
            .count();
        s.lines -= lines;
        into.extend(s.items.drain(..n));
        if n < max && s.items.is_empty() && s.dropped > 0 {
            into.push(Item::Dropped {
                count: std::mem::take(&mut s.dropped),
                since: s.since.take().unwrap_or_else(SystemTime::now),
            });
        }
    }

    /// The next item, waiting for one; `None` once the queue is closed and empty.
    pub async fn pop(&self) -> Option<Item> {
        loop {
            let ready = self.ready.notified();
            if let Some(item) = self.try_pop() {
                return Some(item);
            }
            if self.lock().closed {
                return None;
            }
            ready.await;
        }
    }

    /// Take no more lines; the consumer gets what is queued, then `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Lines queued now (never more than the capacity).
    pub fn len(&self) -> usize {
        self.lock().lines
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::Source;
    use std::time::Duration;

    fn line(i: u64) -> Arc<LogLine> {
        Arc::new(LogLine {
            time: SystemTime::UNIX_EPOCH + Duration::from_secs(i),
            source: Source::App,
            dyno: "web.1".into(),
            message: format!("line {i}"),
        })
    }

    fn message(item: Item) -> String {
        match item {
            Item::Line(l) => l.message.clone(),
            Item::Dropped { count, since } => format!(
                "dropped {count} since {}",
                since
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .unwrap()
                    .as_secs()
            ),
        }
    }

    #[test]
    fn many_at_once_keep_the_order_the_gap_and_the_count() {
        let q = LineQueue::new(3);
        for i in 0..5 {
            q.push(line(i));
        }
        let mut got = Vec::new();
        q.try_pop_many(2, &mut got);
        assert_eq!(q.len(), 1);
        q.try_pop_many(10, &mut got);
        let got: Vec<String> = got.into_iter().map(message).collect();
        assert_eq!(got, ["line 0", "line 1", "line 2", "dropped 2 since 3"]);
        assert_eq!(q.len(), 0);
        // Room again: new lines are queued.
        assert!(q.push(line(9)));
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn full_queue_drops_and_reports_the_gap_in_place() {
        let q = LineQueue::new(2);
        for i in 0..5 {
            q.push(line(i));
        }
        assert_eq!(q.len(), 2);
        assert_eq!(message(q.try_pop().unwrap()), "line 0");
        q.push(line(5));
        let rest: Vec<String> = std::iter::from_fn(|| q.try_pop()).map(message).collect();
        assert_eq!(rest, ["line 1", "dropped 3 since 2", "line 5"]);
    }

    #[test]
    fn a_gap_at_the_end_comes_out_after_the_lines() {
        let q = LineQueue::new(1);
        for i in 0..4 {
            q.push(line(i));
        }
        let all: Vec<String> = std::iter::from_fn(|| q.try_pop()).map(message).collect();
        assert_eq!(all, ["line 0", "dropped 3 since 1"]);
        assert!(q.try_pop().is_none());
    }

    #[tokio::test]
    async fn pop_waits_and_ends_when_closed() {
        let q = Arc::new(LineQueue::new(4));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move {
            let mut got = Vec::new();
            while let Some(item) = q2.pop().await {
                got.push(message(item));
            }
            got
        });
        tokio::task::yield_now().await;
        q.push(line(7));
        q.close();
        assert!(!q.push(line(8)));
        assert_eq!(waiter.await.unwrap(), ["line 7"]);
    }
}
