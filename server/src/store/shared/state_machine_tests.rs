//! Property tests of the delivery state machine against the real store:
//! random sequences of ingest, claim, success, failure, lease expiry,
//! release and resend. Whatever the order: an acknowledged request is never
//! lost, no delivery has two live leases, and terminal states stay terminal.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use proptest::prelude::*;

use super::queries as q;
use super::test_fixtures::{request, store_with_targets};
use crate::store::model::{
    AttemptError, AttemptOutcome, AttemptResponse, AttemptState, ClaimedDelivery, RetryPolicy,
    new_record_id, now_micros,
};

#[derive(Debug, Clone)]
enum Op {
    Ingest,
    Claim(usize),
    Succeed(usize),
    FailRetry(usize),
    FailFinal(usize),
    ExpireLeases,
    Release(usize),
    Resend(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => Just(Op::Ingest),
        3 => (0..3usize).prop_map(Op::Claim),
        2 => (0..3usize).prop_map(Op::Succeed),
        2 => (0..3usize).prop_map(Op::FailRetry),
        1 => (0..3usize).prop_map(Op::FailFinal),
        1 => Just(Op::ExpireLeases),
        1 => (0..3usize).prop_map(Op::Release),
        1 => (0..8usize).prop_map(Op::Resend),
    ]
}

fn outcome(state: AttemptState, ok: bool) -> AttemptOutcome {
    let now = now_micros();
    AttemptOutcome {
        finished_at: now,
        outcome: if ok {
            Ok(AttemptResponse {
                status_code: 200,
                headers: vec![],
                body: Bytes::new(),
                body_truncated: false,
            })
        } else {
            Err(AttemptError {
                kind: "connect".into(),
                message: "refused".into(),
            })
        },
        state,
        elapsed: Duration::from_millis(1),
        next_run_at: (state == AttemptState::Retrying).then_some(now),
        disable_target: None,
        target_failed: Some(!ok),
    }
}

async fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let linear = RetryPolicy::Linear {
        interval: Duration::from_millis(1),
        max_attempts: 100,
    };
    let (_keep, store) = store_with_targets(&[(linear.clone(), 2), (linear, 2)]).await;
    let workers: Vec<String> = (0..3).map(|_| new_record_id()).collect();
    let mut acked: Vec<String> = Vec::new();
    let mut held: HashMap<usize, Vec<ClaimedDelivery>> = HashMap::new();
    // delivery id -> the lease token that may write its outcome
    let mut live: HashMap<String, String> = HashMap::new();
    let mut terminal: HashMap<String, &'static str> = HashMap::new();

    for op in ops {
        match op {
            Op::Ingest => {
                let request = std::sync::Arc::new(request());
                if store.ingest(&request).await.is_ok() {
                    acked.push(request.id.clone());
                }
            }
            Op::Claim(w) => {
                let claimed = store
                    .claim_due_deliveries(&workers[w], 3, &[])
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                for c in claimed {
                    prop_assert!(
                        !live.contains_key(&c.delivery_id),
                        "two live leases on {}",
                        c.delivery_id
                    );
                    prop_assert!(
                        !terminal.contains_key(&c.delivery_id),
                        "a finished delivery was claimed"
                    );
                    live.insert(c.delivery_id.clone(), c.lease_token.clone());
                    held.entry(w).or_default().push(c);
                }
            }
            Op::Succeed(w) | Op::FailRetry(w) | Op::FailFinal(w) => {
                let Some(claim) = held
                    .get_mut(&w)
                    .and_then(|h| (!h.is_empty()).then(|| h.remove(0)))
                else {
                    continue;
                };
                let (state, ok, name) = match op {
                    Op::Succeed(_) => (AttemptState::Delivered, true, Some("delivered")),
                    Op::FailFinal(_) => (AttemptState::Failed, false, Some("failed")),
                    _ => (AttemptState::Retrying, false, None),
                };
                let result = store
                    .finish_attempt(&claim, outcome(state, ok), Duration::from_secs(1))
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let was_live = live.get(&claim.delivery_id) == Some(&claim.lease_token);
                prop_assert_eq!(result.is_some(), was_live, "only the live lease may write");
                if result.is_some() {
                    live.remove(&claim.delivery_id);
                    if let Some(name) = name {
                        terminal.insert(claim.delivery_id.clone(), name);
                    }
                }
            }
            Op::ExpireLeases => {
                sqlx::query("UPDATE deliveries SET lease_expires_at = 0 WHERE state = 'in_flight'")
                    .execute(&store.writer)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                sqlx::query(q::EXPIRE_LEASES)
                    .bind(now_micros())
                    .execute(&store.writer)
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                live.clear();
            }
            Op::Release(w) => {
                store
                    .release_leases(&workers[w])
                    .await
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                live.retain(|_, token| !token.starts_with(&workers[w]));
            }
            Op::Resend(n) => {
                if let Some(id) = (!acked.is_empty()).then(|| acked[n % acked.len()].clone()) {
                    if let Ok((copy, _)) = store.resend(&id, None).await {
                        acked.push(copy.id);
                    }
                }
            }
        }
    }

    let stored = store
        .get_requests(acked.iter().map(String::as_str))
        .await
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let missing: HashSet<&String> = acked
        .iter()
        .filter(|id| !stored.contains_key(*id))
        .collect();
    prop_assert!(
        missing.is_empty(),
        "acknowledged requests lost: {:?}",
        missing
    );
    for (delivery_id, state) in &terminal {
        let found = store
            .get_delivery(delivery_id)
            .await
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(
            found.map(|(d, _)| d.state),
            Some((*state).to_owned()),
            "terminal states stay terminal"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_delivery_state_machine_keeps_its_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        runtime.block_on(run(ops))?;
    }
}
