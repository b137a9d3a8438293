//! Durability under SIGKILL: every webhook that got a 2xx is in the log after
//! a restart and reaches the target at least once.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::util::hooks::{WAIT, all_delivered, received_ids, stored_ids};
use crate::util::{Gateway, TestTarget, eventually};

/// Rounds of load-then-SIGKILL; `CRASH_ROUNDS` raises it for a longer local run.
fn rounds() -> usize {
    std::env::var("CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_webhook_is_lost_to_sigkill() {
    let mut gateway = Gateway::start().await;
    let app = TestTarget::start(200).await;
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "App",
            &app.url(),
            &["--no-ssl", "--no-auth", "--retry-interval=200ms"],
        )
        .await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let target = gateway.http_url(parsed.path());
    let acked = Arc::new(Mutex::new(HashSet::new()));
    let mut next_id = 0u64;

    for round in 0..rounds() {
        // Load from 8 senders until the server dies under them.
        let stop = tokio_util::sync::CancellationToken::new();
        let mut senders = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let (client, target, acked, stop) = (
                crate::util::http(),
                target.clone(),
                acked.clone(),
                stop.clone(),
            );
            let (user, pass) = (
                parsed.username().to_owned(),
                parsed.password().unwrap().to_owned(),
            );
            let first = next_id;
            next_id += 1_000_000;
            senders.spawn(async move {
                let mut id = first;
                while !stop.is_cancelled() {
                    id += 1;
                    let sent = client
                        .post(&target)
                        .basic_auth(&user, Some(&pass))
                        .body(format!(r#"{{"id": {id}}}"#))
                        .timeout(Duration::from_secs(2))
                        .send()
                        .await;
                    if let Ok(response) = sent {
                        if response.status().is_success() {
                            acked.lock().unwrap().insert(id);
                        }
                    } else {
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            });
        }
        let at = Duration::from_millis(rand::random_range(150..600));
        tokio::time::sleep(at).await;
        gateway.kill().await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        stop.cancel();
        while senders.join_next().await.is_some() {}
        gateway.restart().await;
        eprintln!(
            "round {round}: killed after {at:?}; {} acknowledged so far",
            acked.lock().unwrap().len()
        );
    }

    let acked: HashSet<u64> = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "the load ran ({} acknowledged)",
        acked.len()
    );
    let logged = stored_ids(&gateway).await;
    let lost: Vec<_> = acked.difference(&logged).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged webhooks missing from the log: {lost:?}",
        lost.len()
    );

    all_delivered(&app, &acked, WAIT * 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_delivery_duplicates_at_most_what_was_in_flight() {
    let mut gateway = Gateway::start().await;
    let app = TestTarget::start(200).await;
    app.set_delay(Duration::from_millis(300));
    let (_, url) = gateway.add_source("Github", &[]).await;
    gateway
        .add_target(
            "Slow",
            &app.url(),
            &["--no-ssl", "--no-auth", "--max-in-flight=8"],
        )
        .await;
    for id in 0..40 {
        crate::util::hooks::post(&gateway, &url, &format!(r#"{{"id": {id}}}"#)).await;
    }
    // Kill while deliveries are in flight.
    app.wait_for(10, WAIT).await;
    gateway.kill().await;
    app.set_delay(Duration::ZERO);
    gateway.restart().await;

    let all = eventually("all 40 to be delivered", WAIT, || async {
        let got = received_ids(&app);
        let unique: HashSet<u64> = got.iter().copied().collect();
        (unique.len() == 40).then_some(got)
    })
    .await;
    let duplicates = all.len() - 40;
    assert!(
        duplicates <= 8,
        "{duplicates} duplicates, but at most 8 were in flight"
    );
    eprintln!("delivered 40 webhooks with {duplicates} duplicates after SIGKILL");
}
