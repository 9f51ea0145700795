//! Request bodies that stop arriving.

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Body, Frame, SizeHint};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Sleep;

/// A body that sent nothing for `body-timeout-ms`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the request body stopped arriving: nothing for {} ms (body-timeout-ms)", .after.as_millis())]
pub struct BodyStalled {
    /// The timeout.
    pub after: Duration,
}

/// A request body that fails with [`BodyStalled`] when no frame arrives
/// for `timeout` (however long the whole body takes: that is bounded by
/// the size limits).
pub struct TimedBody<B> {
    inner: B,
    timeout: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<B> std::fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimedBody")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl<B> TimedBody<B> {
    /// Wraps `inner`.
    pub fn new(inner: B, timeout: Duration) -> Self {
        TimedBody {
            inner,
            timeout,
            sleep: None,
        }
    }
}

impl<B> Body for TimedBody<B>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = B::Data;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(r) => {
                self.sleep = None;
                Poll::Ready(r.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let timeout = self.timeout;
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(BodyStalled { after: timeout }))))
                    }
                    Poll::Pending => Poll::Pending,
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

/// Why a body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// More than the limit.
    #[error("body larger than {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// Nothing arrived for the body timeout.
    #[error(transparent)]
    Stalled(#[from] BodyStalled),
    /// The whole body did not arrive within the body timeout.
    #[error("the request body did not arrive whole within {} ms (body-timeout-ms)", .after.as_millis())]
    TooSlow {
        /// The timeout.
        after: Duration,
    },
    /// The connection failed.
    #[error("reading the body: {0}")]
    Failed(String),
}

/// Reads a whole body of at most `max` bytes, failing if nothing arrives
/// for `timeout`; with `whole_within`, also if the whole body takes longer
/// than `timeout` (for bodies read before the client is authenticated,
/// which must not be trickled in a byte at a time).
pub async fn read_body<B>(
    body: B,
    max: usize,
    timeout: Duration,
    whole_within: bool,
) -> Result<Bytes, ReadError>
where
    B: Body + Unpin,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let read = Limited::new(TimedBody::new(body, timeout), max).collect();
    let collected = if whole_within {
        tokio::time::timeout(timeout, read)
            .await
            .map_err(|_| ReadError::TooSlow { after: timeout })?
    } else {
        read.await
    };
    match collected {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<LengthLimitError>() => Err(ReadError::TooLarge { max }),
        Err(e) => match e.downcast::<BodyStalled>() {
            Ok(s) => Err(ReadError::Stalled(*s)),
            Err(e) => Err(ReadError::Failed(e.to_string())),
        },
    }
}
