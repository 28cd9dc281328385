//! One runtime timer per connection, shared by all of the connection's deadlines.
//!
//! hyper arms a timer for every request head it waits for (the header-read timeout), and the
//! proxy one for every response it waits for. On tokio each is an insertion into the runtime's
//! timer wheel and a removal, and, whenever the wheel was empty, a wake-up of the runtime's driver
//! (an eventfd write and one more `epoll_wait`). At tens of thousands of requests a second that
//! was about a tenth of the proxy's CPU time. Such deadlines are almost never reached: the request
//! arrives, the upstream answers.
//!
//! [`ConnTimer`] hands out sleeps that share one tokio `Sleep`, armed no later than the earliest
//! deadline any of them waits for. A deadline that moves later (the next request's) costs a clock
//! read and nothing else; the shared timer, when it fires early for a deadline that has since
//! moved, is re-armed once. Setting a deadline is then cheap and the wheel sees about one
//! operation per connection per timeout period.
//!
//! The shared `Sleep` keeps one waker, that of the task that polled it last, so every sleep of a
//! `ConnTimer` must be polled by one task: the connection's (hyper polls the service's futures
//! in the task that drives the connection).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::Instant;

/// The timer of one connection; clones share it. Implements [`hyper::rt::Timer`].
#[derive(Clone, Default)]
pub struct ConnTimer {
    shared: Arc<Mutex<Option<Pin<Box<tokio::time::Sleep>>>>>,
}

/// A sleep of a [`ConnTimer`]: resolves once its deadline has passed.
pub struct ConnSleep {
    deadline: Instant,
    timer: ConnTimer,
}

impl ConnTimer {
    /// A sleep that ends `after` from now.
    pub fn sleep_for(&self, after: Duration) -> ConnSleep {
        ConnSleep { deadline: Instant::now() + after, timer: self.clone() }
    }

    /// Reads the clock only when the shared timer fires, not on every poll.
    fn poll_until(&self, deadline: Instant, cx: &mut Context<'_>) -> Poll<()> {
        let mut slot = self.shared.lock().unwrap_or_else(|e| e.into_inner());
        let sleep = slot.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if sleep.deadline() > deadline {
            sleep.as_mut().reset(deadline);
        }
        loop {
            match sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                // Fired for an earlier deadline, since moved: wait on for this one.
                Poll::Ready(()) if Instant::now() < deadline => sleep.as_mut().reset(deadline),
                Poll::Ready(()) => return Poll::Ready(()),
            }
        }
    }
}

impl Future for ConnSleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.timer.poll_until(self.deadline, cx)
    }
}

impl hyper::rt::Sleep for ConnSleep {}

impl hyper::rt::Timer for ConnTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.sleep_for(duration))
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(ConnSleep { deadline: deadline.into(), timer: self.clone() })
    }

    /// The runtime's clock, so that deadlines agree with tokio's (paused in tests).
    fn now(&self) -> std::time::Instant {
        Instant::now().into_std()
    }

    fn reset(&self, sleep: &mut Pin<Box<dyn hyper::rt::Sleep>>, new_deadline: std::time::Instant) {
        match sleep.as_mut().downcast_mut_pin::<ConnSleep>() {
            Some(s) => s.get_mut().deadline = new_deadline.into(),
            None => *sleep = self.sleep_until(new_deadline),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    /// Whether `f` is ready when polled once now.
    fn ready<F: Future + Unpin>(f: &mut F) -> bool {
        let waker = std::task::Waker::noop();
        Pin::new(f).poll(&mut Context::from_waker(waker)).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_sleep_ends_at_its_deadline_not_before() {
        let t = ConnTimer::default();
        let start = Instant::now();
        t.sleep_for(Duration::from_secs(30)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_later_deadline_is_kept_when_the_shared_timer_fires_early() {
        let t = ConnTimer::default();
        // The first request's deadline arms the shared timer at 10 s; it finishes in time.
        let mut first = t.sleep_for(Duration::from_secs(10));
        assert!(!ready(&mut first));
        drop(first);
        tokio::time::advance(Duration::from_secs(5)).await;
        // The next request's deadline is 5 + 10 s: the timer firing at 10 s must not end it.
        let start = Instant::now();
        t.sleep_for(Duration::from_secs(10)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_deadline_rearms_the_shared_timer() {
        let t = ConnTimer::default();
        let mut long = t.sleep_for(Duration::from_secs(60));
        assert!(!ready(&mut long));
        let start = Instant::now();
        t.sleep_for(Duration::from_secs(2)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        // And the long one still ends at its own deadline.
        long.await;
        assert_eq!(start.elapsed(), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn hyper_resets_move_the_deadline() {
        let t = ConnTimer::default();
        let start = Instant::now();
        let mut s = t.sleep(Duration::from_secs(1));
        t.reset(&mut s, t.now() + Duration::from_secs(3));
        s.await;
        assert_eq!(start.elapsed(), Duration::from_secs(3));
    }
}
