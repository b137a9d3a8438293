//! The routing table ingest reads on every request (sources with their
//! credentials, and which targets each source feeds), kept in memory and
//! rebuilt from the store after any change to sources or targets.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::Store;
use crate::store::StoreError;
use crate::store::model::Source;

/// A snapshot of sources and routes.
#[derive(Debug, Default)]
pub struct Routing {
    sources: HashMap<i64, Arc<Source>>,
    /// Targets routed to a source by name.
    routed: HashMap<i64, Vec<i64>>,
    /// Targets with no routes: they receive from every source.
    everywhere: Vec<i64>,
}

impl Routing {
    /// The targets a request from `source_id` goes to, in id order.
    pub fn targets_of(&self, source_id: i64) -> Vec<i64> {
        let mut targets = self.everywhere.clone();
        if let Some(routed) = self.routed.get(&source_id) {
            targets.extend(routed);
        }
        targets.sort_unstable();
        targets.dedup();
        targets
    }
}

/// Counts changes to sources and targets made through this store, for
/// whatever keeps copies of them.
#[derive(Debug, Clone, Default)]
pub struct Generation(Arc<AtomicU64>);

impl Generation {
    pub fn current(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn advance(&self) {
        self.0.fetch_add(1, Ordering::AcqRel);
    }
}

/// The cached snapshot; None until loaded or after a change.
#[derive(Debug, Clone, Default)]
pub struct RoutingCache {
    snapshot: Arc<RwLock<Option<Arc<Routing>>>>,
    generation: Generation,
}

impl RoutingCache {
    /// Drops the snapshot (the next read rebuilds it) and advances the
    /// generation: called after every change to a source or target.
    pub fn invalidate(&self) {
        self.generation.advance();
        if let Ok(mut cached) = self.snapshot.write() {
            *cached = None;
        }
    }

    /// The changes counted so far.
    pub fn generation(&self) -> Generation {
        self.generation.clone()
    }

    fn get(&self) -> Option<Arc<Routing>> {
        self.snapshot.read().ok().and_then(|cached| cached.clone())
    }

    fn set(&self, routing: Arc<Routing>) {
        if let Ok(mut cached) = self.snapshot.write() {
            *cached = Some(routing);
        }
    }
}

impl Store {
    /// The routing snapshot, rebuilt from the store if a change dropped it.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn routing(&self) -> Result<Arc<Routing>, StoreError> {
        if let Some(routing) = self.routing.get() {
            return Ok(routing);
        }
        let sources = self.list_sources().await?;
        let targets = self.list_targets().await?;
        let mut routing = Routing {
            sources: sources.into_iter().map(|s| (s.id, Arc::new(s))).collect(),
            ..Routing::default()
        };
        for target in targets {
            if target.source_ids.is_empty() {
                routing.everywhere.push(target.id);
            }
            for source_id in target.source_ids {
                routing.routed.entry(source_id).or_default().push(target.id);
            }
        }
        let routing = Arc::new(routing);
        self.routing.set(routing.clone());
        Ok(routing)
    }

    /// The source a webhook is posted to, from the routing snapshot.
    ///
    /// # Errors
    /// The store is unavailable.
    pub async fn ingest_source(&self, id: i64) -> Result<Option<Arc<Source>>, StoreError> {
        Ok(self.routing().await?.sources.get(&id).cloned())
    }
}
