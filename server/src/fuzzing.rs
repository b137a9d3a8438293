//! Entry points of the fuzz targets in `fuzz/` and of the test that replays
//! their corpus: each takes arbitrary bytes, runs the real code on them, and
//! panics only when an invariant of the gateway does not hold.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

use axum::http::{HeaderMap, HeaderValue};
use bytes::Bytes;
use hmac::{Hmac, Mac};
use rand::SeedableRng;
use sha2::Sha256;

use crate::delivery::{RetrySpec, Verdict, delay_after, next_step, parse_schedule, retry_after};
use crate::ingest::{check_basic, verify_github_signature};
use crate::store::model::{AttemptResponse, RetryPolicy, Source, SourceAuth};

/// `Basic base64(user:password)`.
fn basic(user: &str, password: &str) -> String {
    let token = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{user}:{password}"),
    );
    format!("Basic {token}")
}

/// Splits fuzz input into `n` parts at newlines (the last takes the rest).
fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut parts: Vec<&[u8]> = data.splitn(n, |b| *b == b'\n').collect();
    parts.resize(n, b"");
    parts
}

/// `X-Hub-Signature-256` and Basic credentials: input is
/// `secret \n header \n body`. A signature verifies exactly when it is the
/// HMAC of the body; credentials pass exactly when they are the source's.
pub fn signature_headers(data: &[u8]) {
    let p = parts(data, 3);
    let (secret, header, body) = (p[0], String::from_utf8_lossy(p[1]), p[2]);
    let verified = verify_github_signature(secret, &header, body).is_ok();
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return;
    };
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let claimed = header
        .trim()
        .strip_prefix("sha256=")
        .and_then(|h| hex::decode(h).ok());
    assert_eq!(
        verified,
        claimed.as_deref() == Some(digest.as_slice()),
        "signature {header:?}"
    );
    let right = format!("sha256={}", hex::encode(digest));
    assert!(verify_github_signature(secret, &right, body).is_ok());

    let source = Source {
        id: 1,
        name: "fuzz".into(),
        username: String::from_utf8_lossy(secret).into_owned(),
        password: String::from_utf8_lossy(body).into_owned(),
        auth: SourceAuth::None,
        status_code: 200,
        content_type: "text/plain".into(),
        content: Bytes::new(),
        created_at: 0,
    };
    let mut headers = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_bytes(p[1]) {
        headers.insert("authorization", value);
    }
    let _ = check_basic(&source, &headers);
    let mut good = HeaderMap::new();
    if let Ok(value) = HeaderValue::from_str(&basic(&source.username, &source.password)) {
        good.insert("authorization", value);
        if !source.username.contains(':') {
            assert!(check_basic(&source, &good).is_ok(), "the right credentials");
        }
    }
}

/// Retry schedules, durations, retry specs, `Retry-After` values and the
/// delays they lead to: input is `text \n number bytes`. Parsing never
/// panics, and no delay of an accepted policy overflows.
pub fn retry_parsers(data: &[u8]) {
    let p = parts(data, 2);
    let text = String::from_utf8_lossy(p[0]);
    let numbers = p[1];
    let byte = |i: usize| numbers.get(i).copied().unwrap_or(0);
    let word = |i: usize| u64::from_le_bytes(std::array::from_fn(|k| byte(i + k)));

    let schedule = parse_schedule(&text).ok();
    let duration = humantime::parse_duration(text.trim()).ok();
    let spec = RetrySpec {
        kind: Some(text.trim().to_owned()).filter(|_| byte(0) % 2 == 0),
        interval: duration.or(Some(Duration::from_millis(word(1)))),
        factor: Some(f64::from_bits(word(9))).filter(|_| byte(17) % 2 == 0),
        max_interval: Some(Duration::from_secs(word(18) % (1 << 40))),
        schedule,
        max_attempts: Some(u32::from(byte(26)) * 5),
    };
    let base = RetryPolicy::Linear {
        interval: Duration::from_secs(60),
        max_attempts: 5,
    };
    let mut rng = rand::rngs::StdRng::seed_from_u64(word(27));
    if let Ok(policy) = spec.resolve(&base) {
        for attempt in 0..=policy.max_attempts().min(64) + 1 {
            let _ = delay_after(&policy, attempt, &mut rng);
            let verdict = Verdict::Retryable {
                retry_after: duration,
            };
            let (_, at) = next_step(&policy, attempt, verdict, i64::MAX - 1, &mut rng);
            assert!(at.is_none_or(|at| at >= i64::MAX - 1), "time went back");
        }
    }
    let response = AttemptResponse {
        status_code: 429,
        headers: vec![("Retry-After".into(), text.into_owned())],
        body: Bytes::new(),
        body_truncated: false,
    };
    let _ = retry_after(&response, SystemTime::now());
}

/// A running ingest server on 127.0.0.1 with source 1 (credentials in
/// `auth`), on a SQLite store of this process in the temporary directory.
struct IngestHarness {
    runtime: tokio::runtime::Runtime,
    addr: std::net::SocketAddr,
    auth: String,
}

fn ingest_harness() -> &'static IngestHarness {
    static HARNESS: OnceLock<IngestHarness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}"));
        let path = std::env::temp_dir().join(format!("webhook-fuzz-{}.db", std::process::id()));
        for stale in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{stale}", path.display()));
        }
        let url = format!("sqlite://{}", path.display());
        let (addr, auth) = runtime.block_on(async {
            let store = crate::store::Store::open(&url)
                .await
                .unwrap_or_else(|e| panic!("store: {e}"));
            let source = store
                .create_source(crate::store::model::NewSource {
                    name: "fuzz".into(),
                    username: "user".into(),
                    password: "pass".into(),
                    auth: SourceAuth::None,
                    status_code: 200,
                    content_type: "text/plain".into(),
                    content: Bytes::from_static(b"ok"),
                })
                .await
                .unwrap_or_else(|e| panic!("source: {e}"));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .unwrap_or_else(|e| panic!("listen: {e}"));
            let addr = listener
                .local_addr()
                .unwrap_or_else(|e| panic!("address: {e}"));
            let state = crate::ingest::IngestState {
                store,
                bus: crate::logbus::LogBus::new(16),
                max_body_size: 64 * 1024,
                body_timeout: Duration::from_secs(1),
            };
            let stop = tokio_util::sync::CancellationToken::new();
            tokio::spawn(crate::ingest::serve(listener, state, stop));
            (addr, basic(&source.username, &source.password))
        });
        IngestHarness {
            runtime,
            addr,
            auth,
        }
    })
}

/// Raw bytes sent to the ingest server as an HTTP/1.1 connection (every
/// `AUTH` replaced by source 1's valid credentials, so input reaches the
/// store); the server must answer with HTTP/1.x or close, and never with 500.
pub fn ingest_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let harness = ingest_harness();
    let mut request = Vec::with_capacity(data.len() + 64);
    let mut rest = data;
    while let Some(at) = rest.windows(4).position(|w| w == b"AUTH") {
        request.extend_from_slice(&rest[..at]);
        request.extend_from_slice(harness.auth.as_bytes());
        rest = &rest[at + 4..];
    }
    request.extend_from_slice(rest);

    let answer = harness.runtime.block_on(async {
        let mut stream = tokio::net::TcpStream::connect(harness.addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        // The server may answer and close before reading everything.
        let _ = stream.write_all(&request).await;
        let _ = stream.shutdown().await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer));
        match read.await {
            Ok(_) => answer,
            Err(_) => panic!("no answer within 10 s"),
        }
    });
    // An HTTP/2 connection preface (the server speaks h2c too) gets HTTP/2
    // frames back, which this check does not parse.
    if answer.is_empty() || request.starts_with(b"PRI * HTTP/2.0\r\n") {
        return;
    }
    // HTTP/1.0 requests get HTTP/1.0 answers.
    let status = answer
        .strip_prefix(b"HTTP/1.1 ")
        .or_else(|| answer.strip_prefix(b"HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .unwrap_or_else(|| {
            panic!(
                "not an HTTP answer: {:?}",
                String::from_utf8_lossy(&answer[..answer.len().min(64)])
            )
        });
    assert_ne!(
        status,
        b"500",
        "internal error: {:?}",
        String::from_utf8_lossy(&answer)
    );
}
