//! The console in a real browser: headless Chromium driven through
//! WebDriver (`chromedriver`), against the whole system.
//!
//! Ignored by a plain `cargo test`: `scripts/test` runs it in its
//! `browser` stage, which installs Debian's `chromium` and
//! `chromium-driver` first. `DISPATCH_CHROMEDRIVER` names the driver
//! (default: `chromedriver` on the `PATH`) and `DISPATCH_CHROMIUM` the
//! browser (default: the driver's choice).
//!
//! Every page's browser log is read through WebDriver (`goog:loggingPrefs`)
//! and any error fails the test: a script that breaks, a resource that
//! does not load, and anything the Content-Security-Policy refuses. A
//! screenshot of each page is saved under the test's output directory
//! (`target/tmp/console/`).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use crate::console::{failover_body, finished};
use crate::system::System;
use crate::webhooks::{bodies, fast_retries, receiver};

struct Browser {
    client: Client,
    webdriver: String,
    base: String,
    shots: PathBuf,
    http: reqwest::Client,
    _driver: tokio::process::Child,
}

fn as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Browser {
    async fn start(sys: &System) -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let driver =
            std::env::var("DISPATCH_CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let child = tokio::process::Command::new(&driver)
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("{driver}: {e} (install chromium-driver)"));
        let webdriver = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let mut ready = false;
        for _ in 0..200 {
            if http
                .get(format!("{webdriver}/status"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ready, "chromedriver did not start");
        let profile =
            std::env::temp_dir().join(format!("dispatch-chromium-{}", uuid::Uuid::new_v4()));
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--no-first-run".into(),
            "--window-size=1280,1000".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if as_root() {
            args.push("--no-sandbox".into());
        }
        let mut options = json!({ "args": args });
        if let Ok(binary) = std::env::var("DISPATCH_CHROMIUM") {
            options["binary"] = json!(binary);
        }
        let capabilities = json!({
            "browserName": "chrome",
            "goog:chromeOptions": options,
            "goog:loggingPrefs": { "browser": "ALL" },
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&webdriver)
            .await
            .expect("a Chromium session");
        let shots = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console");
        std::fs::create_dir_all(&shots).expect("screenshot directory");
        Browser {
            client,
            webdriver,
            base: sys.url.clone(),
            shots,
            http,
            _driver: child,
        }
    }

    async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .expect("navigate");
    }

    async fn path(&self) -> String {
        let url = self.client.current_url().await.expect("url");
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        }
    }

    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
    }

    async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.expect("text")
    }

    async fn body(&self) -> String {
        self.text("body").await
    }

    /// Saves a screenshot of the page as `{name}.png`.
    async fn shot(&self, name: &str) {
        let png = self.client.screenshot().await.expect("screenshot");
        std::fs::write(self.shots.join(format!("{name}.png")), png).expect("save");
    }

    /// The browser's log entries since the last call.
    async fn log(&self) -> Vec<Value> {
        let session = self
            .client
            .session_id()
            .await
            .ok()
            .flatten()
            .expect("session id");
        for path in ["se/log", "log"] {
            let response = self
                .http
                .post(format!("{}/session/{session}/{path}", self.webdriver))
                .json(&json!({"type": "browser"}))
                .send()
                .await
                .expect("log");
            if response.status().is_success() {
                let body: Value = response.json().await.expect("log JSON");
                return body["value"].as_array().cloned().unwrap_or_default();
            }
        }
        panic!("chromedriver serves no log endpoint");
    }

    /// Fails on any error in the browser's log of page `page`, but those
    /// `allowed` says are expected.
    async fn no_errors(&self, page: &str, allowed: impl Fn(&str) -> bool) {
        let errors: Vec<String> = self
            .log()
            .await
            .into_iter()
            .filter(|e| e["level"] == "SEVERE" || e["level"] == "WARNING")
            .filter_map(|e| e["message"].as_str().map(str::to_owned))
            .filter(|m| !allowed(m))
            .collect();
        assert!(
            errors.is_empty(),
            "the browser's log on {page}: {errors:#?}"
        );
    }

    async fn sign_in(&self, key: &str, secret: &str) {
        self.goto("/console").await;
        assert_eq!(self.path().await, "/console/login", "sent to sign in");
        self.find("input[name=api_key]")
            .await
            .send_keys(key)
            .await
            .expect("key");
        self.find("input[name=api_secret]")
            .await
            .send_keys(secret)
            .await
            .expect("secret");
        self.shot("login").await;
        self.find("form[action='/console/login'] button")
            .await
            .click()
            .await
            .expect("submit");
        self.find("#live").await;
        assert_eq!(self.path().await, "/console");
    }

    /// Waits for the element `id` to be replaced by a fresh copy (htmx's
    /// refresh every 5 s): marked, the mark must go.
    async fn refreshes_itself(&self, id: &str) {
        let mark = format!("document.getElementById('{id}').dataset.stale = 'yes'");
        self.client.execute(&mark, vec![]).await.expect("mark");
        self.client
            .wait()
            .at_most(Duration::from_secs(12))
            .for_element(Locator::Css(&format!("#{id}:not([data-stale])")))
            .await
            .unwrap_or_else(|e| panic!("#{id} did not refresh itself: {e}"));
    }

    async fn sign_out(&self) {
        self.find("form.signout button")
            .await
            .click()
            .await
            .expect("sign out");
        self.find("input[name=api_key]").await;
    }
}

#[tokio::test]
#[ignore = "needs chromium and chromium-driver: scripts/test runs it in its browser stage"]
async fn the_console_in_a_real_browser() {
    let sys = System::start_with_notifier(|c| {
        fast_retries(c);
        // The refused webhooks open the receiver's circuit; the replay
        // then waits for it to close.
        c.webhook_circuit_open_ms = 200;
        c.webhook_circuit_open_max_ms = 400;
        c.console_operator_token = Some(OPERATOR.into());
    })
    .await;
    let (key_a, secret_a) = (sys.api_key.clone(), sys.api_secret.clone());
    let (key_b, secret_b) = sys.account().await;
    // A receiver that refuses every webhook until told otherwise: the
    // workflow's webhooks are dead-lettered.
    let alive = Arc::new(AtomicBool::new(false));
    let up = alive.clone();
    let (url, received) =
        receiver(move |_| if up.load(Ordering::SeqCst) { 200 } else { 503 }).await;
    let (app, auth) = sys.application(&url).await;
    let to = "447700194103";
    let accepted = sys
        .post_as(&auth, "/v0.1/dispatch", &failover_body(to))
        .await;
    let id = accepted["dispatch_uuid"].as_str().expect("id").to_owned();
    finished(&sys, &key_a, &secret_a, &id).await;
    let mut dead = 0;
    for _ in 0..500 {
        let (_, letters) = sys
            .get_basic(&format!("/v1/applications/{app}/webhooks/failed"))
            .await;
        dead = letters["count"].as_u64().unwrap_or(0);
        if dead >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(dead >= 1, "no webhook was dead-lettered");

    let browser = Browser::start(&sys).await;
    browser.sign_in(&key_a, &secret_a).await;
    browser.no_errors("sign-in", |_| false).await;

    // The overview: charts drawn, and its figures refresh themselves
    // (htmx swaps #live in place, under the strict CSP).
    assert!(browser.body().await.contains("Workflows per minute"));
    let charts = browser
        .client
        .find_all(Locator::Css("figure.chart svg"))
        .await
        .expect("charts");
    assert!(charts.len() >= 3, "{} charts", charts.len());
    browser.refreshes_itself("live").await;
    browser.shot("overview").await;
    browser.no_errors("overview", |_| false).await;

    // Found by its recipient as a person types it.
    let search = browser.find("form.inline-search input[name=q]").await;
    search.send_keys("+44 7700 194103").await.expect("type");
    browser
        .find("form.inline-search button")
        .await
        .click()
        .await
        .expect("search");
    let link = browser
        .find(&format!("a[href='/console/workflows/{id}']"))
        .await;
    browser.shot("search").await;
    browser.no_errors("search", |_| false).await;
    link.click().await.expect("open");

    // The timeline: both steps, the deadline that fired, the reason.
    browser.find("svg.timeline").await;
    let rows = browser
        .client
        .find_all(Locator::Css("svg.timeline rect.step"))
        .await
        .expect("rows");
    assert_eq!(rows.len(), 2, "both steps drawn");
    assert!(
        browser
            .text("svg.timeline")
            .await
            .contains("deadline fired")
    );
    let steps = browser.text("#steps").await;
    assert!(
        steps.contains("viber_service_msg") && steps.contains("sms"),
        "{steps}"
    );
    assert!(steps.contains("failed over: deadline"), "{steps}");
    assert!(
        browser.text("#webhooks").await.contains("dead"),
        "attempts listed"
    );
    browser.shot("timeline").await;
    browser.no_errors("timeline", |_| false).await;

    // Replaying a dead letter, once confirmed.
    alive.store(true, Ordering::SeqCst);
    let before = bodies(&received).len();
    browser.goto("/console/dead-letters").await;
    browser.shot("dead-letters").await;
    browser
        .find("a.replay")
        .await
        .click()
        .await
        .expect("replay");
    browser.find("#confirm").await;
    browser.shot("replay-confirm").await;
    browser
        .find("#confirm")
        .await
        .click()
        .await
        .expect("confirm");
    assert_eq!(browser.text("#replayed").await, "1 queued again.");
    browser.shot("replayed").await;
    browser.no_errors("dead letters", |_| false).await;
    sys.eventually(Duration::from_secs(10), || {
        (bodies(&received).len() > before).then_some(())
    })
    .await
    .expect("the replayed webhook was delivered");

    for (path, name) in [
        ("/console/applications", "applications"),
        (&*format!("/console/erase?number={to}"), "erase"),
    ] {
        browser.goto(path).await;
        browser.find("h1").await;
        browser.shot(name).await;
        browser.no_errors(name, |_| false).await;
    }
    assert!(
        browser.body().await.contains(&id),
        "the erasure lists what it would erase"
    );

    // Account B cannot open A's workflow by its URL.
    browser.sign_out().await;
    browser.sign_in(&key_b, &secret_b).await;
    browser.goto(&format!("/console/workflows/{id}")).await;
    assert_eq!(browser.text("h1").await, "Not found");
    browser.shot("another-account").await;
    browser
        .no_errors("another account's workflow", |m| m.contains("404"))
        .await;
    browser.goto(&format!("/console/search?q={to}")).await;
    assert!(browser.body().await.contains("No workflow of yours"));
    browser
        .no_errors("another account's search", |_| false)
        .await;

    // The operator view: global queue depths, refreshed in place.
    browser.sign_out().await;
    browser.goto("/console/operator").await;
    browser
        .find("input[name=token]")
        .await
        .send_keys(OPERATOR)
        .await
        .expect("token");
    browser
        .find("form[action='/console/operator'] button")
        .await
        .click()
        .await
        .expect("sign in");
    assert!(browser.text("#queues").await.contains("send.sms"));
    browser.refreshes_itself("operator-live").await;
    browser.shot("operator").await;
    browser.no_errors("operator", |_| false).await;

    browser.client.close().await.expect("close");
}

const OPERATOR: &str = "operator-token-of-the-browser-test";
