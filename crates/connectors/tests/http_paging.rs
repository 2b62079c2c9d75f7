//! The HTTP source's paging against small scripted APIs on 127.0.0.1: next-page links
//! that carry the API key (never kept), cursors and links that cycle (paging stops at a
//! page already read), and `batching.max_wait` (a page's last batch does not wait for a
//! slow next page).

mod http_common;

use http_common::{config, run, source};
use serde_json::{Value, json};
use sluice_core::{ErrorClass, Source, SourceBatch};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

/// An answer of the scripted API.
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
    /// Answer only once a permit is there (the test hands them out).
    gate: Option<Arc<Semaphore>>,
}

impl Reply {
    fn json(body: Value) -> Self {
        Reply {
            status: 200,
            headers: Vec::new(),
            body: body.to_string(),
            gate: None,
        }
    }
}

type Handler = dyn Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync;

/// A scripted API: each request's path and query go to `handler`; every request's
/// target (path and query) is logged.
struct Api {
    base: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Api {
    async fn start(
        handler: impl Fn(&str, &HashMap<String, String>) -> Reply + Send + Sync + 'static,
    ) -> Api {
        let handler: Arc<Handler> = Arc::new(handler);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let seen = log.clone();
        tokio::spawn(async move {
            while let Ok((mut sock, _)) = listener.accept().await {
                let (handler, seen) = (handler.clone(), seen.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let target = head.split(' ').nth(1).unwrap_or("/").to_owned();
                    seen.lock().unwrap().push(target.clone());
                    let url = url::Url::parse(&format!("http://x{target}")).unwrap();
                    let query: HashMap<String, String> = url.query_pairs().into_owned().collect();
                    let reply = handler(url.path(), &query);
                    if let Some(gate) = &reply.gate {
                        gate.acquire().await.unwrap().forget();
                    }
                    let mut out = format!(
                        "HTTP/1.1 {} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n",
                        reply.status,
                        reply.body.len()
                    );
                    for (k, v) in &reply.headers {
                        out.push_str(&format!("{k}: {v}\r\n"));
                    }
                    out.push_str("\r\n");
                    out.push_str(&reply.body);
                    let _ = sock.write_all(out.as_bytes()).await;
                    let _ = sock.shutdown().await;
                });
            }
        });
        Api { base, log }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn requests(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

fn records(from: u64, to: u64) -> Vec<Value> {
    (from..to)
        .map(|id| json!({"id": id, "name": format!("record {id}")}))
        .collect()
}

const KEY: &str = "k3y-0f-the-api-42";
const TOKEN: &str = "tok-configured-7";

/// 50 records, 10 a page, behind an API key in the query and a configured `token`
/// parameter; the next link copies the whole query string (key and token included), as
/// some APIs do. Record 15 is malformed (not an object).
async fn leaky_api() -> Api {
    let base = Arc::new(Mutex::new(String::new()));
    let at = base.clone();
    let api = Api::start(move |path, q| {
        if q.get("api_key").map(String::as_str) != Some(KEY)
            || q.get("token").map(String::as_str) != Some(TOKEN)
        {
            return Reply {
                status: 401,
                ..Reply::json(json!({"error": "no key"}))
            };
        }
        let after: u64 = q.get("after").and_then(|a| a.parse().ok()).unwrap_or(0);
        let mut data = records(after + 1, (after + 11).min(51));
        if after == 10 {
            data[4] = json!(15);
        }
        let next = (after + 10 < 50).then(|| {
            let mut query: Vec<String> = q
                .iter()
                .filter(|(k, _)| *k != "after")
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            query.sort();
            format!(
                "{}{path}?after={}&{}",
                at.lock().unwrap(),
                after + 10,
                query.join("&")
            )
        });
        let mut reply = Reply::json(json!({"data": data, "next": next}));
        if path == "/link" {
            reply.headers = next
                .iter()
                .map(|n| ("link".to_owned(), format!("<{n}>; rel=\"next\"")))
                .collect();
        }
        reply
    })
    .await;
    *base.lock().unwrap() = api.base.clone();
    api
}

fn ids(batches: &[SourceBatch]) -> Vec<i64> {
    batches.iter().flat_map(http_common::ids).collect()
}

/// A run cut short (max_pages) against an API whose next links carry the key: neither
/// the checkpoint, nor the quarantined records' position, nor the events hold the key
/// or the configured token; the resumed run puts them back and reads every record once.
#[tokio::test]
async fn next_page_links_with_the_key_never_reach_the_checkpoint_or_the_logs() {
    let api = leaky_api().await;
    for (path, pagination) in [
        ("/next", json!({"next_url": {"path": "$.next"}})),
        ("/link", json!("link_header")),
    ] {
        let mut cfg = config(
            api.url(path),
            json!({
                "auth": {"api_key": {"name": "api_key", "value": KEY, "in": "query"}},
                "query": {"token": TOKEN},
                "pagination": pagination,
                "records": {"path": "$.data"},
                "bad_records": "quarantine",
            }),
        );
        cfg.max_pages = 3;
        let first = run(&mut source(cfg.clone(), None), false).await;
        assert!(first.errors.is_empty(), "{path}: {:?}", first.errors);
        let expected: Vec<i64> = (1..=30).filter(|&i| i != 15).collect();
        assert_eq!(first.ids(), expected, "{path}");
        let cp = first.last_checkpoint().unwrap();
        assert_eq!(cp["complete"], false, "{path}");
        let stored = cp.to_string();
        assert!(stored.contains("after=30"), "{path}: {stored}");
        assert_eq!(first.quarantined.len(), 1, "{path}");
        let reread = &first.quarantined[0].reread;
        for text in [&stored, &reread.to_string(), &first.event_text()] {
            assert!(
                !text.contains(KEY) && !text.contains(TOKEN),
                "{path}: a secret was kept: {text}"
            );
        }

        // Resumed: the key (by the auth) and the token (from `query`) go back in.
        let mut resumed = source(cfg.clone(), Some(cp));
        let second = run(&mut resumed, false).await;
        assert!(second.errors.is_empty(), "{path}: {:?}", second.errors);
        assert_eq!(second.ids(), (31..=50).collect::<Vec<_>>(), "{path}");
        assert_eq!(
            second.last_checkpoint().unwrap()["complete"],
            true,
            "{path}"
        );
        let events = second.event_text();
        assert!(events.contains("resumed an unfinished run"), "{events}");
        assert!(!events.contains(KEY) && !events.contains(TOKEN), "{events}");

        // The quarantined record's page is read again from its kept position.
        let e = source(cfg, None).reread(reread).await.unwrap_err();
        assert_eq!(
            e.class,
            ErrorClass::InvalidRequest,
            "{path}: still malformed"
        );
        assert!(!e.message.contains(KEY), "{}", e.message);
    }
    let unauthorized = api
        .requests()
        .iter()
        .filter(|r| !r.contains(KEY) || !r.contains(TOKEN))
        .count();
    assert_eq!(unauthorized, 0, "every request had the key and the token");
}

/// A cursor API whose cursors go `"" → A → B → … → back to one already read`.
async fn cycling_cursors(cycle: &'static [&'static str], back_to: &'static str) -> Api {
    Api::start(move |_, q| {
        let at = q.get("cursor").map(String::as_str).unwrap_or("");
        let place = match at {
            "" => 0,
            c => cycle.iter().position(|x| *x == c).unwrap() + 1,
        };
        let next = cycle.get(place).copied().unwrap_or(back_to);
        Reply::json(json!({
            "data": records(place as u64 + 1, place as u64 + 2),
            "next": next,
        }))
    })
    .await
}

/// Cursors that come back after two or three pages end the paging at the first repeat,
/// as one handed straight back does: every record once, the run complete, and an
/// `invalid_request` event naming the cursor.
#[tokio::test]
async fn cursor_cycles_longer_than_one_step_end_the_paging() {
    for (cycle, back_to, pages) in [
        (&["A"][..], "A", 2),
        (&["A", "B"][..], "A", 3),
        (&["A", "B", "C"][..], "A", 4),
        (&["A", "B", "C"][..], "B", 4),
    ] {
        let api = cycling_cursors(cycle, back_to).await;
        let mut cfg = config(
            api.url("/items"),
            json!({
                "pagination": {"cursor": {"path": "$.next", "param": "cursor"}},
                "records": {"path": "$.data"},
            }),
        );
        cfg.max_pages = 50;
        let r = run(&mut source(cfg, None), false).await;
        assert!(r.errors.is_empty(), "{cycle:?}: {:?}", r.errors);
        assert_eq!(r.ids(), (1..=pages).collect::<Vec<_>>(), "{cycle:?}");
        assert_eq!(api.requests().len(), pages as usize, "{cycle:?}");
        assert_eq!(r.last_checkpoint().unwrap()["complete"], true, "{cycle:?}");
        let repeat = r
            .events
            .iter()
            .find(|e| e.message.contains("already read"))
            .unwrap_or_else(|| panic!("{cycle:?}: no event\n{}", r.event_text()));
        assert_eq!(repeat.class, Some(ErrorClass::InvalidRequest));
        assert!(
            repeat.message.contains(&format!("cursor `{back_to}`")),
            "{}",
            repeat.message
        );
    }
}

/// Next links that lead back to the first page (A → B → A) or around three pages.
#[tokio::test]
async fn next_url_cycles_end_the_paging() {
    for (len, pages) in [(2u64, 2), (3, 3)] {
        let base = Arc::new(Mutex::new(String::new()));
        let at = base.clone();
        let api = Api::start(move |_, q| {
            let p: u64 = q.get("p").and_then(|p| p.parse().ok()).unwrap_or(0);
            Reply::json(json!({
                "data": records(p + 1, p + 2),
                "next": format!("{}/items?p={}", at.lock().unwrap(), (p + 1) % len),
            }))
        })
        .await;
        *base.lock().unwrap() = api.base.clone();
        let mut cfg = config(
            api.url("/items?p=0"),
            json!({
                "pagination": {"next_url": {"path": "$.next"}},
                "records": {"path": "$.data"},
            }),
        );
        cfg.max_pages = 50;
        let r = run(&mut source(cfg, None), false).await;
        assert!(r.errors.is_empty(), "{:?}", r.errors);
        assert_eq!(r.ids(), (1..=pages).collect::<Vec<_>>());
        assert_eq!(r.last_checkpoint().unwrap()["complete"], true);
        assert!(
            r.event_text().contains("already read"),
            "{}",
            r.event_text()
        );
    }
}

/// Pages 2 and 3 (the last, empty) answer only when the test lets them.
async fn gated_pages(gate: Arc<Semaphore>) -> Api {
    Api::start(move |_, q| {
        let page: u64 = q.get("page").and_then(|p| p.parse().ok()).unwrap_or(1);
        let data = match page {
            1 | 2 => records((page - 1) * 10 + 1, page * 10 + 1),
            _ => Vec::new(),
        };
        Reply {
            gate: (page > 1).then(|| gate.clone()),
            ..Reply::json(json!({"data": data}))
        }
    })
    .await
}

fn gated_config(api: &Api, max_wait: &str) -> sluice_connectors::http::HttpSourceConfig {
    config(
        api.url("/items"),
        json!({
            "pagination": {"page_number": {"param": "page"}},
            "records": {"path": "$.data"},
            "batching": {"max_wait": max_wait},
        }),
    )
}

/// Within the test's patience (the guard is generous: this is not a speed check).
async fn next(src: &mut sluice_connectors::http::HttpSource) -> Option<SourceBatch> {
    tokio::time::timeout(Duration::from_secs(20), src.next_batch())
        .await
        .expect("the source answers")
        .unwrap()
}

/// `batching.max_wait`: a page's last batch waits that long for the next page, then goes
/// with its checkpoint (the next page's position). When the run then ends on an empty
/// page, a batch without records carries the completion.
#[tokio::test]
async fn a_batch_waits_at_most_max_wait_for_the_next_page() {
    // Short: each page's batch goes while the next page is still on its way.
    let gate = Arc::new(Semaphore::new(0));
    let api = gated_pages(gate.clone()).await;
    let mut src = source(gated_config(&api, "10ms"), None);
    let b1 = next(&mut src).await.unwrap();
    assert_eq!(http_common::ids(&b1), (1..=10).collect::<Vec<_>>());
    let cp = b1.checkpoint.clone().unwrap();
    assert_eq!(cp["complete"], false);
    assert_eq!(cp["next"]["page"]["page"], 2, "{cp}");
    gate.add_permits(1);
    let b2 = next(&mut src).await.unwrap();
    assert_eq!(http_common::ids(&b2), (11..=20).collect::<Vec<_>>());
    assert_eq!(b2.checkpoint.clone().unwrap()["complete"], false);
    gate.add_permits(1);
    let end = next(&mut src).await.unwrap();
    assert_eq!(end.batch.num_rows(), 0, "the completion, without records");
    assert_eq!(end.batch.records.schema(), b2.batch.records.schema());
    let cp = end.checkpoint.unwrap();
    assert_eq!(cp["complete"], true, "{cp}");
    assert!(next(&mut src).await.is_none());

    // Long: the first page's batch waits for the second page, and the second page's
    // batch is the run's last (the empty third page marks it complete).
    let gate = Arc::new(Semaphore::new(0));
    let api = gated_pages(gate.clone()).await;
    let mut src = source(gated_config(&api, "1h"), None);
    let waited = tokio::time::timeout(Duration::from_millis(300), src.next_batch()).await;
    assert!(waited.is_err(), "the batch waits for the next page");
    gate.add_permits(2);
    let mut batches = Vec::new();
    while let Some(b) = next(&mut src).await {
        batches.push(b);
    }
    assert_eq!(batches.len(), 2);
    assert_eq!(ids(&batches), (1..=20).collect::<Vec<_>>());
    assert_eq!(batches[0].checkpoint.as_ref().unwrap()["complete"], false);
    assert_eq!(batches[1].checkpoint.as_ref().unwrap()["complete"], true);
    // The request cut short by the test's patience was not sent again.
    assert_eq!(api.requests().len(), 3, "{:?}", api.requests());
}
