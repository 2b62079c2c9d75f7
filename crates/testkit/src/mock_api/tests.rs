use super::*;
use serde_json::Value;

async fn get(url: &str) -> Result<(u16, reqwest::header::HeaderMap, String), reqwest::Error> {
    let resp = reqwest::get(url).await?;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    Ok((status, headers, resp.text().await?))
}

fn mock(records: u64) -> MockConfig {
    MockConfig {
        records,
        page_size: 10,
        ..MockConfig::default()
    }
}

#[tokio::test]
async fn every_pagination_route_serves_every_record_once() {
    let m = MockApi::start(mock(25)).await.unwrap();
    let (s, _, body) = get(&m.url("/page/items?page=3")).await.unwrap();
    assert_eq!(s, 200);
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["data"]["items"].as_array().unwrap().len(), 5);
    assert_eq!(v["meta"]["has_more"], false);

    // cursor: follow it to the end
    let mut cursor = String::new();
    let mut seen = 0;
    loop {
        let (_, _, body) = get(&m.url(&format!("/cursor/items?cursor={cursor}")))
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&body).unwrap();
        seen += v["data"]["items"].as_array().unwrap().len();
        match v["meta"]["next_cursor"].as_str() {
            Some(c) => cursor = c.to_owned(),
            None => break,
        }
    }
    assert_eq!(seen, 25);

    let (_, h, body) = get(&m.url("/link/items?page=1")).await.unwrap();
    assert!(h["link"].to_str().unwrap().contains("page=2"));
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        10
    );

    let (_, _, body) = get(&m.url("/ndjson/items?offset=20&limit=10"))
        .await
        .unwrap();
    assert_eq!(body.lines().count(), 5);

    let (_, _, body) = get(&m.url("/next/items?limit=20")).await.unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(v["links"]["next"].as_str().unwrap().contains("after=20"));
    m.shutdown().await;
}

#[tokio::test]
async fn faults_fire_on_their_requests_and_heal_turns_them_off() {
    let m = MockApi::start(MockConfig {
        faults: vec![
            Fault::new(
                1,
                1,
                FaultKind::RateLimited {
                    retry_after: RetryAfter::HttpDate(1),
                },
            ),
            Fault::new(2, 2, FaultKind::ServerError { status: 502 }),
            Fault::new(4, 1, FaultKind::Reset),
            Fault::new(5, 0, FaultKind::MalformedJson),
        ],
        ..mock(5)
    })
    .await
    .unwrap();
    let (s, h, _) = get(&m.url("/page/items")).await.unwrap();
    assert_eq!(s, 429);
    assert!(httpdate::parse_http_date(h["retry-after"].to_str().unwrap()).is_ok());
    assert_eq!(get(&m.url("/page/items")).await.unwrap().0, 502);
    assert_eq!(get(&m.url("/page/items")).await.unwrap().0, 502);
    let reset = get(&m.url("/page/items")).await;
    assert!(reset.is_err(), "{reset:?}");
    let (s, _, body) = get(&m.url("/page/items")).await.unwrap();
    assert_eq!(s, 200);
    assert!(serde_json::from_str::<Value>(&body).is_err());
    m.heal();
    let (_, _, body) = get(&m.url("/page/items")).await.unwrap();
    assert!(serde_json::from_str::<Value>(&body).is_ok());
    let log = m.data_requests();
    assert_eq!(log.len(), 6);
    assert_eq!(log[3].status, 0);
    assert!(log[0].retry_after_until.is_some());
    m.shutdown().await;
}

#[tokio::test]
async fn oauth_tokens_are_issued_checked_and_expired() {
    let m = MockApi::start(MockConfig {
        auth: MockAuth::Oauth2 {
            client_id: "c".into(),
            client_secret: "s".into(),
            token_ttl_secs: 60,
        },
        faults: vec![Fault::new(2, 1, FaultKind::ExpireTokens)],
        ..mock(5)
    })
    .await
    .unwrap();
    let client = reqwest::Client::new();
    let token = client
        .post(m.url("/oauth/token"))
        .basic_auth("c", Some("s"))
        .body("grant_type=client_credentials")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let token: Value = serde_json::from_str(&token).unwrap();
    let token = token["access_token"].as_str().unwrap().to_owned();
    let status = |t: &str| {
        let req = client.get(m.url("/page/items")).bearer_auth(t.to_owned());
        async move { req.send().await.unwrap().status().as_u16() }
    };
    assert_eq!(status(&token).await, 200);
    assert_eq!(status(&token).await, 401, "expired by the fault");
    assert_eq!(status("forged").await, 401);
    m.shutdown().await;
}

#[tokio::test]
async fn limits_answer_413_and_504_and_touch_feeds_updated_since() {
    let m = MockApi::start(MockConfig {
        max_page_size: Some(10),
        max_body_bytes: Some(50),
        ..mock(30)
    })
    .await
    .unwrap();
    assert_eq!(get(&m.url("/offset/items?limit=11")).await.unwrap().0, 504);
    let client = reqwest::Client::new();
    let big = client
        .post(m.url("/search"))
        .body(format!("{{\"pad\":\"{}\"}}", "x".repeat(100)))
        .send()
        .await
        .unwrap();
    assert_eq!(big.status().as_u16(), 413);

    let last = m.record(30).unwrap()["updated_at"]
        .as_str()
        .unwrap()
        .to_owned();
    m.touch(&[4, 7]);
    let (_, _, body) = get(&m.url(&format!("/offset/items?updated_since={last}")))
        .await
        .unwrap();
    let v: Value = serde_json::from_str(&body).unwrap();
    let ids: Vec<u64> = v["data"]["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![4, 7]);
    m.shutdown().await;
}

#[tokio::test]
async fn config_deserializes_from_json() {
    let cfg: MockConfig = serde_json::from_str(
        r#"{"records": 10, "auth": {"type": "hmac", "key": "k"},
            "faults": [{"from_request": 3, "times": 2, "kind": {"type": "slow", "delay_ms": 50}}],
            "drift": {"from_id": 5, "change": "retype"}}"#,
    )
    .unwrap();
    assert_eq!(cfg.faults[0].times, 2);
    assert!(serde_json::from_str::<MockConfig>(r#"{"recrods": 1}"#).is_err());
}
