//! Authentication of `/v0.1/*`: Basic or a Bearer JWT (RS256, signed with
//! the application's private key), never both; every failure a 401.

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::cases;
use crate::harness::{TestApp, assert_problem, send};

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

pub fn sign(private_pem: &str, claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("private key"),
    )
    .expect("sign")
}

/// An RSA key pair made by the test, as a client would: (public, private).
pub fn client_key_pair() -> (String, String) {
    use aws_lc_rs::encoding::{AsDer, Pkcs8V1Der, PublicKeyX509Der};
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::KeyPair as _;
    let pair = KeyPair::generate(KeySize::Rsa2048).expect("keygen");
    let private: Pkcs8V1Der<'static> = pair.as_der().expect("pkcs8");
    let public: PublicKeyX509Der<'static> = pair.public_key().as_der().expect("spki");
    let pem = |label: &str, der: &[u8]| {
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("ascii"))
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    (
        pem("PUBLIC KEY", public.as_ref()),
        pem("PRIVATE KEY", private.as_ref()),
    )
}

/// Creates an application with a server-made key: (id, private key PEM).
pub async fn server_keyed_app(app: &TestApp) -> (String, String) {
    let (status, body) = app
        .post_json("/v2/applications", &json!({"name": "jwt"}))
        .await;
    assert_eq!(status, 200, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["keys"]["private_key"]
            .as_str()
            .expect("private key")
            .to_owned(),
    )
}

async fn post_bearer(app: &TestApp, token: &str) -> (u16, Value) {
    send(
        app.client
            .post(format!("{}/v0.1/messages?", app.url))
            .bearer_auth(token)
            .json(&cases::sms()),
    )
    .await
}

#[tokio::test]
async fn bearer_tokens_as_clients_in_the_field_send_them() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (id, private) = server_keyed_app(&app).await;
    let jti = || uuid::Uuid::new_v4().to_string();

    // No `exp` (the Node SDKs of that era), exp = iat + 900, exp = iat + 60.
    for claims in [
        json!({"application_id": id, "iat": now(), "jti": jti()}),
        json!({"application_id": id, "iat": now(), "jti": jti(), "exp": now() + 900}),
        json!({"application_id": id, "iat": now(), "jti": jti(), "exp": now() + 60}),
    ] {
        let (status, body) = post_bearer(&app, &sign(&private, &claims)).await;
        assert_eq!(status, 202, "{claims}: {body}");
    }
    let queued = app.drain_queued().await;
    assert_eq!(queued.len(), 3);
    let envelope: Value = serde_json::from_slice(&queued[0].delivery.data).expect("json");
    assert_eq!(envelope["application_id"], id.as_str());
    assert_eq!(envelope["account"], app.account.api_key.as_str());

    // A key the client made itself, registered as the application's.
    let (public, private) = client_key_pair();
    let (status, body) = app
        .post_json(
            "/v2/applications",
            &json!({"name": "own key", "keys": {"public_key": public}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["keys"].get("private_key").is_none());
    let own = body["id"].as_str().expect("id");
    let token = sign(
        &private,
        &json!({"application_id": own, "iat": now(), "jti": jti()}),
    );
    assert_eq!(post_bearer(&app, &token).await.0, 202);
}

#[tokio::test]
async fn every_bad_credential_is_a_401() {
    let app = TestApp::spawn().await;
    app.wait_ready().await;
    let (id, private) = server_keyed_app(&app).await;
    let (_, stranger_key) = client_key_pair();
    let max_age = app.config.jwt_max_age_secs as i64;
    let leeway = app.config.jwt_leeway_secs as i64;
    let claims = |extra: Value| {
        let mut c = json!({"application_id": id, "iat": now(), "jti": "x"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let tokens = [
        (
            "signed by another key",
            sign(&stranger_key, &claims(json!({}))),
        ),
        (
            "expired",
            sign(&private, &claims(json!({"exp": now() - leeway - 10}))),
        ),
        (
            "too old",
            sign(
                &private,
                &claims(json!({"iat": now() - max_age - leeway - 10})),
            ),
        ),
        (
            "issued in the future",
            sign(&private, &claims(json!({"iat": now() + leeway + 60}))),
        ),
        ("no iat", sign(&private, &json!({"application_id": id}))),
        ("no application_id", sign(&private, &json!({"iat": now()}))),
        (
            "unknown application",
            sign(
                &private,
                &claims(json!({"application_id": uuid::Uuid::new_v4()})),
            ),
        ),
        (
            "HS256 with the public key as secret",
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims(json!({})),
                &EncodingKey::from_secret(b"guess"),
            )
            .expect("sign"),
        ),
        ("garbage", "not.a.token".to_owned()),
    ];
    for (what, token) in tokens {
        let (status, body) = post_bearer(&app, &token).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_problem(status, &body, 401);
    }

    let url = format!("{}/v0.1/messages", app.url);
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let good_basic = basic(&app.account.api_key, &app.account.api_secret);
    let good_bearer = format!("Bearer {}", sign(&private, &claims(json!({}))));
    let cases: Vec<(&str, Vec<String>)> = vec![
        ("none", vec![]),
        ("wrong secret", vec![basic(&app.account.api_key, "wrong")]),
        ("unknown key", vec![basic("nobody", "secret")]),
        ("not base64", vec!["Basic %%%".to_owned()]),
        (
            "no colon",
            vec![format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("abc")
            )],
        ),
        ("other scheme", vec!["Digest abc".to_owned()]),
        (
            "both at once",
            vec![good_basic.clone(), good_bearer.clone()],
        ),
    ];
    for (what, headers) in cases {
        let mut request = app.client.post(&url).json(&cases::sms());
        for h in headers {
            request = request.header("authorization", h);
        }
        let (status, body) = send(request).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_problem(status, &body, 401);
    }
    assert!(app.drain_queued().await.is_empty());

    // The same credentials, one at a time, work.
    for h in [good_basic, good_bearer] {
        let (status, _) = send(
            app.client
                .post(&url)
                .header("authorization", h)
                .json(&cases::sms()),
        )
        .await;
        assert_eq!(status, 202);
    }
}

#[tokio::test]
async fn the_applications_api_takes_basic_only() {
    let app = TestApp::spawn().await;
    let (id, private) = server_keyed_app(&app).await;
    let token = sign(&private, &json!({"application_id": id, "iat": now()}));
    let (status, body) = send(
        app.client
            .get(format!("{}/v2/applications", app.url))
            .bearer_auth(token),
    )
    .await;
    assert_problem(status, &body, 401);
}
