//! Managed Redis speaks TLS and names ACL users: a whole workflow against
//! a local redis-server that only listens on a TLS port, with a
//! certificate of a private CA, and whose default user is off.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::system::System;
use crate::{reported, sms};

/// A redis-server on a TLS port only, killed (and its files removed) on
/// drop.
struct TlsRedis {
    child: std::process::Child,
    certs: Certs,
    port: u16,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl runs (apt-get install openssl)");
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A private CA and a certificate it signed for `localhost` and
/// 127.0.0.1 (`server.pem`, `server.key`, `ca.pem`), removed on drop.
pub struct Certs {
    pub dir: PathBuf,
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Certs {
    pub fn make() -> Self {
        let dir = std::env::temp_dir().join(format!("dispatch-tls-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &dir,
            &[
                &["req", "-x509", "-nodes", "-days", "2"],
                &ec[..],
                &[
                    "-keyout",
                    "ca.key",
                    "-out",
                    "ca.pem",
                    "-subj",
                    "/CN=dispatch test CA",
                ],
            ]
            .concat(),
        );
        openssl(
            &dir,
            &[
                &["req", "-nodes"],
                &ec[..],
                &[
                    "-keyout",
                    "server.key",
                    "-out",
                    "server.csr",
                    "-subj",
                    "/CN=localhost",
                ],
            ]
            .concat(),
        );
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\n",
        )
        .expect("extensions");
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-out",
                "server.pem",
                "-extfile",
                "server.ext",
            ],
        );
        Certs { dir }
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).to_string_lossy().into_owned()
    }
}

impl TlsRedis {
    /// A redis-server that presents [`Certs`]' certificate, with one ACL
    /// user `dispatch`.
    fn start() -> Self {
        let certs = Certs::make();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new("redis-server")
            .args(["--port", "0", "--tls-port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args([
                "--tls-cert-file",
                "server.pem",
                "--tls-key-file",
                "server.key",
            ])
            .args(["--tls-ca-cert-file", "ca.pem", "--tls-auth-clients", "no"])
            .args(["--user", "default", "off"])
            .args(["--user", "dispatch", "on", ">s3cret", "~*", "&*", "+@all"])
            .current_dir(&certs.dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        TlsRedis { child, certs, port }
    }

    fn ca_file(&self) -> String {
        self.certs.path("ca.pem")
    }
}

#[tokio::test]
async fn a_workflow_runs_on_a_redis_over_tls_as_an_acl_user() {
    let redis = TlsRedis::start();
    let url = format!("rediss://dispatch:s3cret@localhost:{}/", redis.port);
    let mut config = crate::system::test_config();
    config.redis_url = url.clone();
    config.redis_tls_ca_file = Some(redis.ca_file());
    // A standalone server, whatever the suite runs against.
    config.redis_cluster = false;
    let client = dispatch_infra::redis::client(&config).expect("client");
    let mut whoami = None;
    for _ in 0..100 {
        if let Ok(mut conn) = client.get_multiplexed_async_connection().await {
            whoami = redis::cmd("ACL")
                .arg("WHOAMI")
                .query_async::<String>(&mut conn)
                .await
                .ok();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        whoami.as_deref(),
        Some("dispatch"),
        "connected as the ACL user"
    );

    // Without the CA, the certificate is not trusted.
    let untrusted = redis::Client::open(url.as_str()).expect("client");
    assert!(
        untrusted.get_multiplexed_async_connection().await.is_err(),
        "a certificate of an unknown CA was trusted"
    );

    let ca_file = redis.ca_file();
    let sys = System::start_configured(true, |c| {
        c.redis_url = url.clone();
        c.redis_tls_ca_file = Some(ca_file);
        c.redis_cluster = false;
    })
    .await;
    let to = "447700170001";
    sys.sim.set(to, Default::default());
    let id = sys.message(sms(to)).await;
    reported(&sys, id, "delivered").await;
    assert_eq!(sys.sim.sends_to(to).len(), 1);
}

/// A free port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[tokio::test]
async fn ingest_serves_https_with_its_own_certificate() {
    let certs = Certs::make();
    let sys = System::start().await;
    let port = free_port();
    let _ingest = sys
        .command("ingest")
        .env("DISPATCH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("DISPATCH_TLS_CERT", certs.path("server.pem"))
        .env("DISPATCH_TLS_KEY", certs.path("server.key"))
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("ingest starts");
    let ca = std::fs::read(certs.path("ca.pem")).expect("ca.pem");
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("a certificate"))
        .build()
        .expect("client");
    let to = "447700170002";
    sys.sim.set(to, Default::default());
    let url = format!("https://localhost:{port}/v0.1/messages");
    let mut answer = None;
    for _ in 0..200 {
        let sent = client
            .post(&url)
            .basic_auth(&sys.api_key, Some(&sys.api_secret))
            .json(&sms(to))
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == 202 => {
                answer = Some(r.json::<serde_json::Value>().await.expect("json"));
                break;
            }
            // Not listening yet, or 503 until its broker connection is up.
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    let answer = answer.expect("a 202 over HTTPS");
    let id: uuid::Uuid = answer["message_uuid"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .expect("message_uuid");
    reported(&sys, id, "delivered").await;

    // Plain HTTP on that port gets no answer; an unknown CA is refused.
    let plain = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/healthz"))
        .send()
        .await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
    let untrusted = reqwest::Client::new()
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await;
    assert!(
        untrusted.is_err(),
        "a certificate of an unknown CA was trusted"
    );
}
