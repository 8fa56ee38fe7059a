//! Request body streaming: the size limit, the idle timer, and progress marks for the upstream
//! timeout.
//!
//! Bodies are never collected: [`LimitedBody`] hands each frame on as it arrives and only counts
//! bytes. A chunked body that crosses the limit mid-stream ends in an error, which makes hyper
//! abort the upstream request, so the upstream never sees a silently truncated body. The
//! upstream client hands [`BodyError`] back untouched, so the pipeline tells its own limits from
//! the upstream's failures by type.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

/// Why a body stopped early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// More bytes than the limit.
    #[error("body exceeds the size limit")]
    TooLarge,
    /// No frame for longer than the idle timeout.
    #[error("body idle for too long")]
    Idle,
    /// The peer's stream failed.
    #[error("body stream failed")]
    Inner(#[source] crate::error::BoxError),
}

/// Closes a stream that has been silent for too long. The timer is armed lazily, only when the
/// body actually waits, so bodies that are ready at once cost no timer registration.
#[derive(Debug)]
pub(crate) struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    /// A frame went through since the timer was last armed.
    active: bool,
}

impl IdleTimer {
    /// A timer that fires after `limit` of silence.
    pub(crate) fn new(limit: Duration) -> Self {
        Self {
            limit,
            sleep: None,
            active: false,
        }
    }

    /// Records that a frame went through.
    pub(crate) fn mark_active(&mut self) {
        self.active = true;
    }

    /// Called when the body is about to wait: whether the silence has lasted too long.
    pub(crate) fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let limit = self.limit;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if self.active {
                    sleep.as_mut().reset(Instant::now() + limit);
                }
                sleep
            }
            None => self.sleep.insert(Box::pin(tokio::time::sleep(limit))),
        };
        self.active = false;
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// Shared flag that a request body set each time a frame went upstream; the wait for the
/// response head restarts its clock while it is set (see `proxy::forward`). It also counts the
/// body's bytes, for the metrics.
#[derive(Debug, Clone, Default)]
pub(crate) struct Progress(Arc<ProgressCells>);

#[derive(Debug, Default)]
pub(crate) struct ProgressCells {
    moved: AtomicBool,
    bytes: AtomicU64,
}

impl Progress {
    /// Marks progress: `len` more bytes went by.
    pub(crate) fn mark(&self, len: u64) {
        self.0.moved.store(true, Ordering::Relaxed);
        if len > 0 {
            self.0.bytes.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Whether there was progress since the last call.
    pub(crate) fn take(&self) -> bool {
        self.0.moved.swap(false, Ordering::Relaxed)
    }

    /// The body bytes that went by so far.
    pub(crate) fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Relaxed)
    }
}

pin_project! {
    /// A body passed through frame by frame, failing once more than `limit` bytes went by or
    /// after `idle` of silence.
    #[derive(Debug)]
    pub(crate) struct LimitedBody<B> {
        #[pin]
        inner: B,
        remaining: u64,
        idle: IdleTimer,
        progress: Option<Progress>,
    }
}

impl<B> LimitedBody<B> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: B, limit: u64, idle: Duration, progress: Option<Progress>) -> Self {
        Self {
            inner,
            remaining: limit,
            idle: IdleTimer::new(idle),
            progress,
        }
    }
}

impl<B> Body for LimitedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<crate::error::BoxError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let mut len = 0;
                if let Some(data) = frame.data_ref() {
                    len = data.len() as u64;
                    if len > *this.remaining {
                        *this.remaining = 0;
                        return Poll::Ready(Some(Err(BodyError::TooLarge)));
                    }
                    *this.remaining -= len;
                }
                this.idle.mark_active();
                if let Some(progress) = this.progress {
                    progress.mark(len);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Inner(e.into())))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if this.idle.poll_expired(cx) {
                    Poll::Ready(Some(Err(BodyError::Idle)))
                } else {
                    Poll::Pending
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_body_util::channel::Channel;
    use std::collections::VecDeque;

    /// A body made of ready frames of the given sizes.
    struct Chunks(VecDeque<Bytes>);

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Ready(self.0.pop_front().map(|b| Ok(Frame::data(b))))
        }
    }

    fn chunks(sizes: &[usize]) -> Chunks {
        Chunks(sizes.iter().map(|&n| Bytes::from(vec![7u8; n])).collect())
    }

    #[tokio::test]
    async fn passes_bodies_within_the_limit_frame_by_frame() {
        let body = LimitedBody::new(chunks(&[3, 4, 3]), 10, Duration::from_secs(5), None);
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes.len(), 10);
    }

    #[tokio::test]
    async fn fails_when_a_frame_crosses_the_limit() {
        let progress = Progress::default();
        let mut body = LimitedBody::new(
            chunks(&[6, 6]),
            10,
            Duration::from_secs(5),
            Some(progress.clone()),
        );
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().len(), 6);
        assert!(progress.take());
        assert!(!progress.take());
        assert!(matches!(body.frame().await, Some(Err(BodyError::TooLarge))));
    }

    #[tokio::test(start_paused = true)]
    async fn silent_bodies_time_out_and_active_ones_do_not() {
        let (mut tx, rx) = Channel::<Bytes, std::convert::Infallible>::new(4);
        let mut body = LimitedBody::new(rx, 100, Duration::from_secs(5), None);
        let feeder = tokio::spawn(async move {
            for _ in 0..3 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send_data(Bytes::from_static(b"x")).await.unwrap();
            }
            // Keep the sender open and silent.
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(tx);
        });
        for _ in 0..3 {
            assert!(body.frame().await.unwrap().is_ok());
        }
        assert!(matches!(body.frame().await, Some(Err(BodyError::Idle))));
        feeder.abort();
    }
}
