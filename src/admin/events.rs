//! Server-sent events for the dashboard: a snapshot of every backend once a second, until the
//! client goes away or alb shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame};
use tokio::sync::watch;
use tokio::time::Interval;

use super::api::snapshot;
use crate::proxy::Proxy;

const PERIOD: Duration = Duration::from_secs(1);

pub struct EventsBody {
    proxy: Arc<Proxy>,
    tick: Interval,
    stopped: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
}

impl std::fmt::Debug for EventsBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventsBody").finish_non_exhaustive()
    }
}

impl EventsBody {
    pub fn new(proxy: Arc<Proxy>, mut stopped: watch::Receiver<bool>) -> EventsBody {
        EventsBody {
            proxy,
            tick: tokio::time::interval(PERIOD),
            stopped: Box::pin(async move {
                let _ = stopped.wait_for(|s| *s).await;
            }),
        }
    }
}

impl Body for EventsBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.stopped.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        match self.tick.poll_tick(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(_) => {
                let json = serde_json::to_string(&snapshot(&self.proxy)).unwrap_or_default();
                Poll::Ready(Some(Ok(Frame::data(Bytes::from(format!(
                    "data: {json}\n\n"
                ))))))
            }
        }
    }
}
