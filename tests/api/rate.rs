//! Per-account request rates: an account over its rate gets 429 with
//! `Retry-After`, and never slows another account down; the count is
//! shared by every ingest replica.

use std::time::Instant;

use dispatch_ingest::rate::Rate;
use serde_json::Value;

use crate::cases;
use crate::harness::{Account, TestApp, assert_problem, test_config};

/// Posts a message as `account`: (status, `Retry-After`, body).
async fn post(app: &TestApp, account: &Account) -> (u16, Option<u64>, Value) {
    let response = app
        .post("/v0.1/messages", account)
        .json(&cases::sms())
        .send()
        .await
        .expect("sent");
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, retry_after, body)
}

/// Floods as `account` through `apps` in turn; returns how many were
/// accepted, after checking every refusal.
async fn flood(apps: &[&TestApp], account: &Account, requests: usize) -> usize {
    let mut accepted = 0;
    for i in 0..requests {
        let (status, retry_after, body) = post(apps[i % apps.len()], account).await;
        if status == 202 {
            accepted += 1;
            continue;
        }
        assert_problem(status, &body, 429);
        assert!(
            body["type"]
                .as_str()
                .unwrap_or_default()
                .ends_with("#Throttled"),
            "{body}"
        );
        assert!(
            retry_after.is_some_and(|s| s >= 1),
            "Retry-After: {retry_after:?}"
        );
    }
    accepted
}

/// At most the burst, plus what the rate refilled meanwhile, plus one for
/// the refill under way.
fn most_accepted(rate: Rate, since: Instant) -> usize {
    let refilled = since.elapsed().as_secs_f64() * f64::from(rate.per_sec);
    rate.burst as usize + refilled.ceil() as usize + 1
}

#[tokio::test]
async fn a_flooding_account_does_not_throttle_another() {
    let rate = Rate {
        per_sec: 2,
        burst: 5,
    };
    let mut config = test_config();
    config.account_rate_per_sec = rate.per_sec;
    config.account_rate_burst = rate.burst;
    let app = TestApp::spawn_with(config).await;
    app.wait_ready().await;
    let flooder = app.account.clone();
    let quiet = app.create_account().await;

    let started = Instant::now();
    let accepted = flood(&[&app], &flooder, 30).await;
    assert!(
        (rate.burst as usize..=most_accepted(rate, started)).contains(&accepted),
        "{accepted} of 30 accepted"
    );
    // The other account still has its whole burst.
    for _ in 0..rate.burst {
        let (status, _, body) = post(&app, &quiet).await;
        assert_eq!(status, 202, "{body}");
    }
}

#[tokio::test]
async fn the_rate_holds_across_replicas() {
    let rate = Rate {
        per_sec: 2,
        burst: 4,
    };
    let mut config = test_config();
    config.account_rate_per_sec = rate.per_sec;
    config.account_rate_burst = rate.burst;
    let one = TestApp::spawn_with(config.clone()).await;
    let two = TestApp::spawn_with(config).await;
    one.wait_ready().await;
    two.wait_ready().await;

    let started = Instant::now();
    let accepted = flood(&[&one, &two], &one.account, 24).await;
    assert!(
        (rate.burst as usize..=most_accepted(rate, started)).contains(&accepted),
        "{accepted} of 24 accepted over two replicas"
    );
}

#[tokio::test]
async fn an_account_rate_overrides_the_default() {
    // No default limit; one account limited on its own.
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let limited = app.account.clone();
    let free = app.create_account().await;
    let rate = Rate {
        per_sec: 1,
        burst: 3,
    };
    let set = dispatch_ingest::accounts::set_rate(
        &mut app.state.redis(),
        &app.state.keys,
        &limited.api_key,
        Some(rate),
    )
    .await
    .expect("set");
    assert!(set);
    let started = Instant::now();
    let accepted = flood(&[&app], &limited, 15).await;
    assert!(
        (rate.burst as usize..=most_accepted(rate, started)).contains(&accepted),
        "{accepted} of 15 accepted"
    );
    for _ in 0..15 {
        let (status, _, body) = post(&app, &free).await;
        assert_eq!(status, 202, "{body}");
    }
    // An unknown account is not created by setting its rate.
    let unknown = dispatch_ingest::accounts::set_rate(
        &mut app.state.redis(),
        &app.state.keys,
        "nobody",
        Some(rate),
    )
    .await
    .expect("set");
    assert!(!unknown);
}

#[tokio::test]
async fn an_account_rate_of_zero_is_no_limit() {
    let mut config = test_config();
    config.account_rate_per_sec = 1;
    config.account_rate_burst = 1;
    let app = TestApp::spawn_with(config).await;
    app.wait_ready().await;
    let exempt = app.account.clone();
    dispatch_ingest::accounts::set_rate(
        &mut app.state.redis(),
        &app.state.keys,
        &exempt.api_key,
        Some(Rate {
            per_sec: 0,
            burst: 0,
        }),
    )
    .await
    .expect("set");
    for _ in 0..10 {
        let (status, _, body) = post(&app, &exempt).await;
        assert_eq!(status, 202, "{body}");
    }
    // The default still applies to everyone else, on the Applications API
    // too, in its own error format.
    let other = app.create_account().await;
    let list = || app.get("/v2/applications", &other).send();
    let mut throttled = None;
    for _ in 0..5 {
        let response = list().await.expect("sent");
        if response.status() == 429 {
            throttled = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let response = throttled.expect("throttled within five requests at 1/s");
    assert!(response.headers().contains_key("retry-after"));
    let body: Value = response.json().await.expect("json");
    assert_problem(429, &body, 429);
    assert!(
        body["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("#rate-limit"),
        "{body}"
    );
}
