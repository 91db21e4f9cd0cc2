//! The HTTP server's own limits: slow clients are cut off, and no more
//! than `http_max_connections` connections are served at once.

use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{TestApp, assert_problem, test_config};

/// Well above every timeout the tests set: a connection the server should
/// close must be closed by then.
const BOUND: Duration = Duration::from_secs(5);

async fn connect(app: &TestApp) -> TcpStream {
    let addr = app.url.trim_start_matches("http://");
    TcpStream::connect(addr).await.expect("connect")
}

/// Reads until the server closes the connection; panics if it does not
/// within [`BOUND`]. Returns what it sent.
async fn read_to_close(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = tokio::time::timeout(BOUND, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => out.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the server kept the connection open; it sent {:?}",
        String::from_utf8_lossy(&out)
    );
    out
}

/// Reads one response with a `Content-Length` body: (status, body).
async fn read_response(stream: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            let status = head
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .expect("status");
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if data.len() >= end + 4 + length {
                return (status, data[end + 4..end + 4 + length].to_vec());
            }
        }
        let n = stream.read(&mut buf).await.expect("read");
        assert!(n > 0, "closed before a whole response");
        data.extend_from_slice(&buf[..n]);
    }
}

fn get_healthz() -> &'static [u8] {
    b"GET /healthz HTTP/1.1\r\nHost: ingest\r\n\r\n"
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let mut config = test_config();
    config.http_header_timeout_ms = 300;
    config.http_body_timeout_ms = 300;
    let app = TestApp::spawn_with(config).await;

    // Nothing at all.
    let mut silent = connect(&app).await;
    // A few bytes of headers, then silence.
    let mut slow_headers = connect(&app).await;
    slow_headers
        .write_all(b"POST /v0.1/messages HTTP/1.1\r\nHost: ingest\r\nContent-Le")
        .await
        .expect("write");
    // Whole headers, then half the body.
    let mut slow_body = connect(&app).await;
    let auth = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        format!("{}:{}", app.account.api_key, app.account.api_secret),
    );
    let head = format!(
        "POST /v0.1/messages HTTP/1.1\r\nHost: ingest\r\nAuthorization: Basic {auth}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"to\":"
    );
    slow_body.write_all(head.as_bytes()).await.expect("write");
    // A kept-alive connection that goes quiet after its request.
    let mut idle = connect(&app).await;
    idle.write_all(get_healthz()).await.expect("write");
    let (status, _) = read_response(&mut idle).await;
    assert_eq!(status, 200);

    let (silent, slow_headers, slow_body, idle) = tokio::join!(
        read_to_close(&mut silent),
        read_to_close(&mut slow_headers),
        read_to_close(&mut slow_body),
        read_to_close(&mut idle),
    );
    let _ = (silent, slow_headers, idle);
    // The slow body is told why, in the API's error format.
    let text = String::from_utf8_lossy(&slow_body);
    let (head, body) = text.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    let body: Value = serde_json::from_str(body).expect("json error body");
    assert_problem(408, &body, 408);
}

#[tokio::test]
async fn connections_over_the_cap_wait_for_one_to_close() {
    let mut config = test_config();
    config.http_max_connections = 2;
    let app = TestApp::spawn_with(config).await;

    let mut first = connect(&app).await;
    let mut second = connect(&app).await;
    for stream in [&mut first, &mut second] {
        stream.write_all(get_healthz()).await.expect("write");
        assert_eq!(read_response(stream).await.0, 200);
    }
    // The third connects (the kernel's backlog takes it) but is not served
    // while the other two stay open.
    let mut third = connect(&app).await;
    third.write_all(get_healthz()).await.expect("write");
    let early = tokio::time::timeout(Duration::from_millis(300), read_response(&mut third)).await;
    assert!(early.is_err(), "served over the cap: {early:?}");
    // The second is still served meanwhile.
    second.write_all(get_healthz()).await.expect("write");
    assert_eq!(read_response(&mut second).await.0, 200);

    drop(first);
    let served = tokio::time::timeout(BOUND, read_response(&mut third)).await;
    assert_eq!(served.expect("served once a connection closed").0, 200);
}
