//! `server.header_timeout` for HTTP/1 connections: how long a client may take to send a
//! complete request head, counted from when cookiegate starts waiting for it (the connection's
//! first bytes, or the end of the previous exchange on a keep-alive connection, so an idle
//! keep-alive connection is closed after the same time).
//!
//! hyper has the same timeout built in, but it creates, registers and frees a timer for every
//! request head, about 4% of the instructions of a whole proxied request (BENCHMARKS.md). This
//! one keeps a single timer per connection and arms it lazily: starting a wait only notes a
//! deadline; the timer is moved to the deadline only when it fires early, so a busy connection
//! touches the timer wheel about once per timeout period instead of once per request.
//!
//! hyper's HTTP/1 server reads again after each exchange only when it has a header read timeout
//! of its own (`State::idle` in hyper's `proto/h1/conn.rs`); that read is what starts the wait
//! for the next head here. So hyper keeps its setting, with [`NeverTimer`], whose sleeps never
//! end and, being zero-sized, are never allocated: `tests/it/shutdown.rs` checks that idle
//! keep-alive connections are still closed on time.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The head timeout of one connection.
#[derive(Debug)]
pub(super) struct HeadTimer {
    limit: Duration,
    /// When the head being waited for is due; `None` while no head is awaited (an exchange is
    /// in progress).
    deadline: Option<Instant>,
    /// Registered at some deadline no later than `deadline`; created on first use.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl HeadTimer {
    /// A timer allowing `limit` per head.
    pub(super) fn new(limit: Duration) -> Self {
        Self {
            limit,
            deadline: None,
            sleep: None,
        }
    }

    /// An exchange is in progress: no head is awaited.
    pub(super) fn stop(&mut self) {
        self.deadline = None;
    }

    /// The connection waits for (more of) a request head: starts the clock if it is not
    /// running, and tells whether the time is up. When it is not, `cx` is woken at the
    /// deadline.
    pub(super) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let deadline = *self.deadline.get_or_insert_with(|| Instant::now() + limit);
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        loop {
            if sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            // It fired for an earlier wait: move it to this one's deadline, or time out.
            if Instant::now() >= deadline {
                return true;
            }
            sleep.as_mut().reset(deadline);
        }
    }
}

/// A [`hyper::rt::Timer`] whose sleeps never end (see the module docs).
#[derive(Debug, Clone, Copy)]
pub(super) struct NeverTimer;

impl hyper::rt::Timer for NeverTimer {
    fn sleep(&self, _: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Never)
    }

    fn sleep_until(&self, _: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Never)
    }
}

struct Never;

impl Future for Never {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl hyper::rt::Sleep for Never {}

#[cfg(test)]
mod tests {
    use super::*;

    fn poll(timer: &mut HeadTimer) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        timer.poll_expired(&mut cx)
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_expires_after_the_limit_and_not_before() {
        let mut timer = HeadTimer::new(Duration::from_secs(10));
        assert!(!poll(&mut timer));
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert!(!poll(&mut timer));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(poll(&mut timer));
    }

    #[tokio::test(start_paused = true)]
    async fn each_wait_gets_the_full_limit_however_long_the_exchanges_before_it() {
        let mut timer = HeadTimer::new(Duration::from_secs(10));
        for _ in 0..5 {
            assert!(!poll(&mut timer));
            tokio::time::advance(Duration::from_secs(6)).await;
            assert!(!poll(&mut timer));
            // The head came; a long exchange follows, past the old deadline.
            timer.stop();
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        // A new wait starts now and has its whole limit, though the timer fired long ago.
        assert!(!poll(&mut timer));
        tokio::time::advance(Duration::from_millis(9_900)).await;
        assert!(!poll(&mut timer));
        tokio::time::advance(Duration::from_millis(100)).await;
        assert!(poll(&mut timer));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_that_goes_on_keeps_its_start() {
        let mut timer = HeadTimer::new(Duration::from_secs(10));
        assert!(!poll(&mut timer));
        for _ in 0..9 {
            // Bytes of the head trickle in: still the same wait.
            tokio::time::advance(Duration::from_secs(1)).await;
            assert!(!poll(&mut timer));
        }
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(poll(&mut timer));
    }
}
