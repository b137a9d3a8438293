//! Stores for the store's own tests: a real, fresh store of the backend
//! (a SQLite file, or a schema of its own on the PostgreSQL server) with one
//! source and some targets, and requests to ingest.

use std::time::Duration;

use bytes::Bytes;

use super::Store;
use crate::store::model::{
    DeliverySettings, NewSource, NewTarget, RetryPolicy, SourceAuth, StoredRequest, new_record_id,
    now_micros,
};

/// A fresh store with source 1 and one target per entry of `targets`
/// (retry policy, in-flight cap), each receiving from every source; keep
/// the first value as long as the store is used.
pub async fn store_with_targets(targets: &[(RetryPolicy, u32)]) -> (super::TestKeep, Store) {
    let (keep, store) = super::test_store().await;
    store
        .create_source(NewSource {
            name: "s".into(),
            username: "u".into(),
            password: "p".into(),
            auth: SourceAuth::None,
            status_code: 200,
            content_type: "text/plain".into(),
            content: Bytes::new(),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for (i, (retry, max_in_flight)) in targets.iter().enumerate() {
        store
            .create_target(NewTarget {
                name: format!("t{i}"),
                url: "http://127.0.0.1:9/".into(),
                signing_secret: None,
                source_ids: vec![],
                settings: DeliverySettings {
                    retry: retry.clone(),
                    timeout: Duration::from_secs(1),
                    follow_redirects: false,
                    retry_on_4xx: false,
                    max_in_flight: *max_in_flight,
                    rate: None,
                    break_after: 0,
                },
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    (keep, store)
}

/// A small webhook to source 1.
pub fn request() -> StoredRequest {
    StoredRequest {
        id: new_record_id(),
        source_id: 1,
        source_name: None,
        method: "POST".into(),
        path: "/1".into(),
        query: String::new(),
        headers: vec![],
        body: Bytes::from_static(b"{}"),
        remote_addr: "127.0.0.1:1".into(),
        created_at: now_micros(),
        resent_from: None,
    }
}

/// Attaches a worker `worker_id` with `slots` slots: every commit from
/// here on claims for it. Returns its end of the hand-over.
pub async fn attach(
    store: &Store,
    worker_id: &str,
    slots: usize,
) -> crate::store::dispatch::DispatchFeed {
    let (handle, feed) = crate::store::dispatch::channel(worker_id, slots);
    store
        .dispatch_to(Some(std::sync::Arc::new(handle)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    feed
}

/// A worker with a few free slots attached to `store` (whose first target
/// has room), then one webhook stored: its delivery, as the webhook's
/// commit handed it over (its first attempt).
pub async fn one_webhook_handed_over(store: &Store) -> crate::store::model::ClaimedDelivery {
    let mut feed = attach(store, &new_record_id(), 4).await;
    let webhook = std::sync::Arc::new(request());
    assert_eq!(store.ingest(&webhook).await.ok(), Some(1));
    let handed = tokio::time::timeout(Duration::from_secs(1), feed.receiver.recv())
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("the hand-over channel closed"));
    let [delivery] = <[_; 1]>::try_from(handed.deliveries)
        .unwrap_or_else(|d| panic!("{} deliveries handed over", d.len()));
    assert_eq!(delivery.request.id, webhook.id);
    assert_eq!(delivery.attempt, 1);
    delivery
}
