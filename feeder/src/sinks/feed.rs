//! The gRPC feed as a sink: [`Server`] streams the newest snapshot to every
//! connected dsfeed.so and `dsfeed watch`, and ends every stream with
//! UNAVAILABLE when the hub shuts down.

use std::sync::Arc;

use crate::feed::Shared;
use crate::feed::server::Server;
use crate::sinks::{Sink, SinkFuture, Snapshots};

/// The feed's listeners and what they serve from.
pub struct FeedSink {
    server: Server,
    shared: Arc<Shared>,
}

impl FeedSink {
    /// Serves `shared` (built on the hub's snapshots, and shared with the
    /// HTTP endpoints, which show the feed's clients) on `server`'s
    /// listeners.
    pub fn new(server: Server, shared: Arc<Shared>) -> Self {
        FeedSink { server, shared }
    }
}

impl Sink for FeedSink {
    fn name(&self) -> &str {
        "feed"
    }

    fn run(self: Box<Self>, snapshots: Snapshots) -> SinkFuture {
        let FeedSink { server, shared } = *self;
        Box::pin(server.run(shared, snapshots.closed()))
    }
}
