//! In-process fan-out of log records to live followers. Records are published
//! after they are committed. Publishing never waits: a follower that falls
//! more than [`LOG_BUS_CAPACITY`] records behind loses the oldest and is told
//! how many.

use std::sync::Arc;

use tokio::sync::broadcast;

use crate::store::model::LogRecord;

/// Records a follower may fall behind before it starts missing some.
pub const LOG_BUS_CAPACITY: usize = 4096;

/// The publisher side; clone it freely.
#[derive(Debug, Clone)]
pub struct LogBus {
    sender: broadcast::Sender<Arc<LogRecord>>,
}

impl Default for LogBus {
    fn default() -> Self {
        Self::new()
    }
}

impl LogBus {
    /// A bus with no followers.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(LOG_BUS_CAPACITY);
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
