//! In-process fan-out of log records to live followers. Records are published
//! after they are committed. Publishing never waits: a follower that falls
//! more than the bus capacity behind loses the oldest records and is told
//! how many.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::model::LogRecord;

/// The publisher side; clone it freely.
#[derive(Debug, Clone)]
pub struct LogBus {
    sender: broadcast::Sender<Arc<LogRecord>>,
}

impl LogBus {
    /// A bus with no followers, keeping up to `capacity` (at least 1) records
    /// for each follower that has not read them yet.
    pub fn new(capacity: usize) -> Self {
        let (sender, _) = broadcast::channel(capacity.max(1));
        LogBus { sender }
    }

    /// Hands a committed record to every current follower.
    pub fn publish(&self, record: LogRecord) {
        // Err only means nobody follows right now.
        let _ = self.sender.send(Arc::new(record));
    }

    /// A new follower, receiving records published from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<LogRecord>> {
        self.sender.subscribe()
    }
}
