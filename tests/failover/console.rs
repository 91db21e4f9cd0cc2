//! The web console over HTTP, as a browser without scripts would use it:
//! sign-in and its limits, two accounts that see only their own, the
//! security headers, bad input, and the erasure of a recipient (API and
//! console). The same pages in a real browser: `console_browser.rs`.

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};

use crate::system::{System, step};

/// A visitor of the console: its own cookies, no redirects followed.
pub struct Visitor {
    client: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
}

pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Answer {
    pub fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The value of the first hidden `csrf` field, if any.
    pub fn csrf_or_empty(&self) -> String {
        if self.body.contains(r#"name="csrf""#) {
            self.csrf()
        } else {
            String::new()
        }
    }

    /// The value of the first hidden `csrf` field.
    pub fn csrf(&self) -> String {
        let at = self
            .body
            .find(r#"name="csrf" value=""#)
            .expect("a csrf field")
            + 19;
        self.body[at..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Visitor {
    pub fn new(sys: &System) -> Self {
        Visitor {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            base: sys.url.clone(),
            cookies: HashMap::new(),
        }
    }

    async fn send(&mut self, request: reqwest::RequestBuilder) -> Answer {
        let cookie = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let response = request
            .header("cookie", cookie)
            .send()
            .await
            .expect("request");
        for set in response.headers().get_all("set-cookie") {
            let set = set.to_str().expect("ascii");
            let pair = set.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || set.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        Answer {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response.text().await.expect("body"),
        }
    }

    pub async fn get(&mut self, path: &str) -> Answer {
        let request = self.client.get(format!("{}{path}", self.base));
        self.send(request).await
    }

    pub async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Answer {
        let body = serde_urlencoded::to_string(form).expect("form");
        let request = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        self.send(request).await
    }

    pub async fn sign_in(&mut self, key: &str, secret: &str) -> Answer {
        let form = self.get("/console/login").await;
        assert_eq!(form.status, 200, "{}", form.body);
        let csrf = form.csrf();
        self.post(
            "/console/login",
            &[("csrf", &csrf), ("api_key", key), ("api_secret", secret)],
        )
        .await
    }
}

/// Posts a failover dispatch of account `key:secret` whose first step
/// (Viber, never delivered) fails over on its deadline to SMS; returns
/// its dispatch uuid.
pub async fn failover_dispatch(sys: &System, key: &str, secret: &str, to: &str) -> String {
    let body = failover_body(to);
    let response = sys
        .client()
        .post(format!("{}/v0.1/dispatch", sys.url))
        .basic_auth(key, Some(secret))
        .json(&body)
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 202);
    let body: Value = response.json().await.expect("JSON");
    body["dispatch_uuid"].as_str().expect("id").to_owned()
}

/// The body of [`failover_dispatch`].
pub fn failover_body(to: &str) -> Value {
    let mut first = step("viber_service_msg", to, Some((15, "delivered")));
    first["client_ref"] = json!(format!("ref-{to}"));
    json!({"template": "failover", "workflow": [first, step("sms", to, None)]})
}

/// Waits until dispatch `id` of `key:secret` has ended.
pub async fn finished(sys: &System, key: &str, secret: &str, id: &str) -> Value {
    for _ in 0..500 {
        let view: Value = sys
            .client()
            .get(format!("{}/v0.1/dispatch/{id}", sys.url))
            .basic_auth(key, Some(secret))
            .send()
            .await
            .expect("GET")
            .json()
            .await
            .unwrap_or(Value::Null);
        if view["status"] == "completed" || view["status"] == "error" {
            return view;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("dispatch {id} did not end");
}

#[tokio::test]
async fn the_console_shows_an_account_its_own_workflows_and_nothing_else() {
    let sys = System::start_configured(true, |c| {
        c.trace_url_template = Some("http://traces.test/trace/{trace_id}".into());
    })
    .await;
    let (key_a, secret_a) = (sys.api_key.clone(), sys.api_secret.clone());
    let (key_b, secret_b) = sys.account().await;
    let (app, _) = sys
        .application("https://hooks.test/status?token=s3cret")
        .await;
    // Posted within a caller's trace: the workflow links to it.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let response = sys
        .client()
        .post(format!("{}/v0.1/dispatch", sys.url))
        .basic_auth(&key_a, Some(&secret_a))
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .json(&failover_body("447700190103"))
        .send()
        .await
        .expect("POST");
    let accepted: Value = response.json().await.expect("JSON");
    let id = accepted["dispatch_uuid"].as_str().expect("id").to_owned();
    // A client_ref that looks like a uuid is found as one.
    let order = uuid::Uuid::new_v4().to_string();
    let mut body = failover_body("447700190203");
    body["workflow"][0]["client_ref"] = json!(order);
    let response = sys
        .client()
        .post(format!("{}/v0.1/dispatch", sys.url))
        .basic_auth(&key_a, Some(&secret_a))
        .json(&body)
        .send()
        .await
        .expect("POST");
    let by_order: Value = response.json().await.expect("JSON");
    let by_order = by_order["dispatch_uuid"].as_str().expect("id").to_owned();
    finished(&sys, &key_a, &secret_a, &id).await;

    let mut a = Visitor::new(&sys);
    let away = a.get("/console").await;
    assert_eq!((away.status, away.location()), (303, "/console/login"));
    let form = a.get("/console/login").await;
    let csp = form.headers["content-security-policy"]
        .to_str()
        .expect("csp");
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'self'"));
    assert!(!csp.contains("unsafe"), "{csp}");
    assert_eq!(form.headers["x-frame-options"], "DENY");
    assert_eq!(form.headers["x-content-type-options"], "nosniff");

    // A wrong secret, then a form posted without its cookie.
    let wrong = a.sign_in(&key_a, "not-the-secret").await;
    assert_eq!(wrong.status, 401, "{}", wrong.body);
    assert!(!a.cookies.contains_key("dispatch_console"));
    let mut stranger = Visitor::new(&sys);
    let forged = stranger
        .post(
            "/console/login",
            &[
                ("csrf", &form.csrf()),
                ("api_key", &key_a),
                ("api_secret", &secret_a),
            ],
        )
        .await;
    assert_eq!(forged.status, 403);

    let signed = a.sign_in(&key_a, &secret_a).await;
    assert_eq!((signed.status, signed.location()), (303, "/console"));
    let set: Vec<&str> = signed
        .headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let session = set
        .iter()
        .find(|c| c.starts_with("dispatch_console="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Strict"));
    assert!(!session.contains("Secure"), "plain http here");

    let overview = a.get("/console").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("Workflows per minute"));
    assert!(overview.body.contains(&id), "recent workflows list it");
    let live = a.get("/console/live").await;
    assert!(live.body.starts_with("<div id=\"live\""), "{}", live.body);

    // Found by number as people type it, by client_ref, by either uuid.
    let found = a.get("/console/search?q=%2B44%207700-190103").await;
    assert_eq!(found.status, 200);
    assert!(found.body.contains(&id), "{}", found.body);
    assert!(
        a.get("/console/search?q=ref-447700190103")
            .await
            .body
            .contains(&id)
    );
    let found = a.get(&format!("/console/search?q={order}")).await;
    assert!(found.body.contains(&by_order), "{}", found.body);
    let by_id = a.get(&format!("/console/search?q={id}")).await;
    assert_eq!(by_id.location(), format!("/console/workflows/{id}"));
    let timeline = a.get(&format!("/console/workflows/{id}")).await;
    assert_eq!(timeline.status, 200);
    assert!(timeline.body.contains("viber_service_msg") && timeline.body.contains("sms"));
    assert!(
        timeline
            .body
            .contains("failed over: <strong>deadline</strong>")
    );
    assert!(
        timeline.body.contains("deadline fired"),
        "drawn on the timeline"
    );
    assert!(
        timeline
            .body
            .contains(&format!("href=\"http://traces.test/trace/{trace}\"")),
        "the trace link"
    );
    let message = timeline
        .body
        .split("class=\"mono small message\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .expect("a message uuid")
        .to_owned();
    let by_message = a.get(&format!("/console/workflows/{message}")).await;
    assert_eq!(
        by_message.status, 200,
        "a message's uuid opens its workflow"
    );

    // Bad input: a clear page, never a 500, everything escaped.
    assert_eq!(a.get("/console/workflows/not-a-uuid").await.status, 400);
    assert_eq!(
        a.get("/console/search?q=x&page=99999999999").await.status,
        400
    );
    assert_eq!(a.get("/console/search?q=x&page=0").await.status, 400);
    let long = "9".repeat(500);
    assert_eq!(
        a.get(&format!("/console/search?q={long}")).await.status,
        400
    );
    let script = a
        .get("/console/search?q=%3Cscript%3Ealert(1)%3C%2Fscript%3E")
        .await;
    assert_eq!(script.status, 200);
    assert!(!script.body.contains("<script>alert") && script.body.contains("&lt;script&gt;"));
    let wrong_method = a.post("/console/search", &[("q", "x")]).await;
    assert_eq!(wrong_method.status, 405);
    assert!(wrong_method.headers.contains_key("content-security-policy"));
    let missing = a.get("/console/no-such-page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.body.contains("Not found"));
    let uuid = uuid::Uuid::new_v4();
    assert_eq!(
        a.get(&format!("/console/workflows/{uuid}")).await.status,
        404
    );
    let apps = a.get("/console/applications").await;
    assert_eq!(apps.status, 200);
    assert!(apps.body.contains(&app) && apps.body.contains("https://hooks.test/status"));
    assert!(
        !apps.body.contains("s3cret"),
        "no query string, no credentials"
    );
    assert_eq!(a.get("/console/dead-letters").await.status, 200);
    let forged = a
        .post(
            "/console/dead-letters/replay",
            &[("csrf", "x"), ("scope", &key_a)],
        )
        .await;
    assert_eq!(forged.status, 403);

    // Account B sees none of it.
    let mut b = Visitor::new(&sys);
    assert_eq!(b.sign_in(&key_b, &secret_b).await.status, 303);
    assert_eq!(b.get(&format!("/console/workflows/{id}")).await.status, 404);
    assert_eq!(
        b.get(&format!("/console/workflows/{message}")).await.status,
        404
    );
    let theirs = b.get("/console/search?q=447700190103").await;
    assert!(!theirs.body.contains(&id) && theirs.body.contains("No workflow of yours"));
    let by_id = b.get(&format!("/console/search?q={id}")).await;
    assert_eq!(by_id.status, 200, "not a redirect to A's workflow");
    assert!(
        !by_id.body.contains("/console/workflows/") && by_id.body.contains("No workflow of yours")
    );
    assert!(!b.get("/console").await.body.contains(&id));
    let scope = b
        .get(&format!("/console/dead-letters/replay?scope={key_a}"))
        .await;
    assert_eq!(scope.status, 404, "another account's dead letters");
    let scope = b
        .get(&format!("/console/dead-letters/replay?scope={app}"))
        .await;
    assert_eq!(scope.status, 404, "another account's application");
    for page in ["/console/applications", "/console/dead-letters"] {
        let seen = b.get(page).await;
        assert_eq!(seen.status, 200);
        assert!(!seen.body.contains(&app), "{page} shows A's application");
    }
    let erase = b.get("/console/erase?number=447700190103").await;
    assert!(!erase.body.contains(&id) && erase.body.contains("Nothing of this account"));

    // Signing out ends the session; its cookie opens nothing after, and
    // the overview's refresh is sent to sign in as a whole page.
    let csrf = a.get("/console").await.csrf();
    let out = a.post("/console/logout", &[("csrf", &csrf)]).await;
    assert_eq!((out.status, out.location()), (303, "/console/login"));
    assert_eq!(a.get("/console").await.status, 303);
    let refresh = a
        .send(
            a.client
                .get(format!("{}/console/live", a.base))
                .header("hx-request", "true"),
        )
        .await;
    assert_eq!(refresh.headers["hx-redirect"], "/console/login");
}

#[tokio::test]
async fn the_operator_sees_the_queues_and_no_account_pages() {
    let token = "operator-token-for-tests";
    let sys = System::start_configured(true, |c| {
        c.console_operator_token = Some(token.into());
    })
    .await;
    let mut v = Visitor::new(&sys);
    let form = v.get("/console/operator").await;
    assert_eq!(form.status, 200);
    let csrf = form.csrf();
    let wrong = v
        .post("/console/operator", &[("csrf", &csrf), ("token", "not-it")])
        .await;
    assert_eq!(wrong.status, 401);
    let signed = v
        .post("/console/operator", &[("csrf", &csrf), ("token", token)])
        .await;
    assert_eq!(
        (signed.status, signed.location()),
        (303, "/console/operator")
    );
    let view = v.get("/console/operator").await;
    assert_eq!(view.status, 200);
    for queue in ["send.sms", "send.whatsapp", "webhooks"] {
        assert!(view.body.contains(queue), "{queue} in {}", view.body);
    }
    assert!(view.body.contains("id=\"in-flight\""));
    assert!(view.body.contains("Send commands waiting, per channel"));
    // The operator is no account: account pages send it back.
    let away = v.get("/console").await;
    assert_eq!((away.status, away.location()), (303, "/console/operator"));

    // Without a token configured, nobody signs in as the operator.
    let plain = System::start().await;
    let mut v = Visitor::new(&plain);
    let form = v.get("/console/operator").await;
    assert!(
        form.body
            .contains("no console_operator_token is configured")
    );
    let csrf = form.csrf_or_empty();
    let tried = v
        .post("/console/operator", &[("csrf", &csrf), ("token", token)])
        .await;
    assert_eq!(tried.status, 404);
}

#[tokio::test]
async fn sign_ins_are_limited_and_the_console_can_be_turned_off() {
    let sys = System::start_configured(true, |c| c.console_sign_ins_per_min = 2).await;
    let mut v = Visitor::new(&sys);
    let key = sys.api_key.clone();
    assert_eq!(v.sign_in(&key, "wrong").await.status, 401);
    assert_eq!(v.sign_in(&key, "wrong").await.status, 401);
    let third = v.sign_in(&key, &sys.api_secret.clone()).await;
    assert_eq!(third.status, 429, "even with the right secret");

    let off = System::start_configured(true, |c| c.console_enabled = false).await;
    let mut v = Visitor::new(&off);
    let gone = v.get("/console/login").await;
    assert_eq!(gone.status, 404);
    assert!(gone.body.contains("\"type\""), "the API's own 404");
}

#[tokio::test]
async fn erasing_a_recipient_removes_its_workflows_everywhere() {
    let sys = System::start().await;
    let (key, secret) = (sys.api_key.clone(), sys.api_secret.clone());
    let gone = failover_dispatch(&sys, &key, &secret, "447700191103").await;
    let kept = failover_dispatch(&sys, &key, &secret, "447700192103").await;
    let view = finished(&sys, &key, &secret, &gone).await;
    finished(&sys, &key, &secret, &kept).await;
    let message = view["messages"][0]["message_uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();

    let erase = |number: &str, auth: bool| {
        let request = sys
            .client()
            .delete(format!("{}/v0.1/recipients/{number}", sys.url));
        let request = if auth {
            request.basic_auth(&key, Some(&secret))
        } else {
            request
        };
        async move { request.send().await.expect("DELETE") }
    };
    assert_eq!(erase("447700191103", false).await.status().as_u16(), 401);
    let erased = erase("%2B44%207700%20191103", true).await;
    assert_eq!(erased.status().as_u16(), 200);
    let body: Value = erased.json().await.expect("JSON");
    assert_eq!(body, json!({"erased_workflows": 1}));

    let (status, _) = sys.get_basic(&format!("/v0.1/dispatch/{gone}")).await;
    assert_eq!(status, 404);
    let (status, _) = sys.get_basic(&format!("/v0.1/messages/{message}")).await;
    assert_eq!(status, 404);
    let (status, _) = sys.get_basic(&format!("/v0.1/dispatch/{kept}")).await;
    assert_eq!(status, 200, "another recipient's workflow stays");

    let redis = dispatch_infra::redis::connect(&sys.config).expect("redis");
    let keys = dispatch_infra::redis::Keys::for_config(&sys.config);
    let exists = |key: String| {
        let mut redis = redis.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<i64>(&mut redis)
                .await
                .expect("EXISTS")
        }
    };
    assert_eq!(exists(keys.workflow(&gone)).await, 0);
    assert_eq!(exists(keys.message(&message)).await, 0);
    assert_eq!(exists(keys.sent(&message)).await, 0);
    assert_eq!(
        exists(keys.search(&key, "to", "447700191103")).await,
        0,
        "the recipient's index"
    );
    let members = |index: String| {
        let mut redis = redis.clone();
        async move {
            redis::cmd("ZRANGE")
                .arg(index)
                .arg(0)
                .arg(-1)
                .query_async::<Vec<String>>(&mut redis)
                .await
                .expect("ZRANGE")
        }
    };
    let all = members(keys.search(&key, "all", "")).await;
    assert!(!all.contains(&gone) && all.contains(&kept), "{all:?}");
    assert!(
        members(keys.search(&key, "ref", "ref-447700191103"))
            .await
            .is_empty()
    );

    // The console's action does the same, with a confirmation first.
    let mut v = Visitor::new(&sys);
    assert_eq!(v.sign_in(&key, &secret).await.status, 303);
    let confirm = v.get("/console/erase?number=447700192103").await;
    assert!(confirm.body.contains(&kept), "{}", confirm.body);
    assert!(confirm.body.contains("Erase them for good"));
    let csrf = confirm.csrf();
    let forged = v
        .post(
            "/console/erase",
            &[("csrf", "nope"), ("number", "447700192103")],
        )
        .await;
    assert_eq!(forged.status, 403);
    let done = v
        .post(
            "/console/erase",
            &[("csrf", &csrf), ("number", "447700192103")],
        )
        .await;
    assert_eq!(done.status, 200);
    assert!(done.body.contains("1 workflows sent to"), "{}", done.body);
    let (status, _) = sys.get_basic(&format!("/v0.1/dispatch/{kept}")).await;
    assert_eq!(status, 404);
    assert_eq!(
        erase("447700192103", true)
            .await
            .json::<Value>()
            .await
            .expect("JSON"),
        json!({"erased_workflows": 0})
    );
}
