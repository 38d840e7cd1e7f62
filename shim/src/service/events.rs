//! Task events to containerd, in the order the service emits them.
//!
//! Every event goes through one unbounded queue and one forwarding task, so an OOM queued
//! before an exit is published before it. Queueing never blocks the caller.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use containerd_shim::event::Event;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::ttrpc::context::with_duration;
use containerd_shim::publisher::RemotePublisher;
use tokio::sync::mpsc;

/// A queued event: topic and message.
pub type Queued = (String, Box<dyn MessageDyn>);

/// Where the service puts events.
#[derive(Clone)]
pub struct EventSink {
    tx: mpsc::UnboundedSender<Queued>,
}

impl EventSink {
    /// A sink and the stream it feeds.
    pub fn channel() -> (EventSink, mpsc::UnboundedReceiver<Queued>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (EventSink { tx }, rx)
    }

    /// Queues an event; dropped (and logged) only if the forwarder is gone at shutdown.
    pub fn send<E: Event + 'static>(&self, event: E) {
        let topic = event.topic();
        if self.tx.send((topic.clone(), Box::new(event))).is_err() {
            tracing::debug!(topic, "event dropped: shim is shutting down");
        }
    }
}

/// Publishes queued events to containerd, one at a time, in order.
pub fn forward(
    publisher: RemotePublisher,
    namespace: String,
    mut rx: mpsc::UnboundedReceiver<Queued>,
) {
    tokio::spawn(async move {
        while let Some((topic, event)) = rx.recv().await {
            let ctx = with_duration(Duration::from_secs(5));
            if let Err(e) = publisher.publish(ctx, &topic, &namespace, event).await {
                tracing::warn!(topic, error = %e, "publish event to containerd failed");
            }
        }
    });
}

/// A protobuf timestamp for a system time.
pub fn timestamp(at: SystemTime) -> Timestamp {
    let since = at.duration_since(UNIX_EPOCH).unwrap_or_default();
    Timestamp {
        seconds: since.as_secs() as i64,
        nanos: since.subsec_nanos() as i32,
        ..Default::default()
    }
}
