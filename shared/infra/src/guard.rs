//! Which targets that accounts name may be called: webhook URLs, and the
//! URLs of provider records set through the API.
//!
//! Only `http` and `https`, and by default never an address inside the
//! deployment's own networks: loopback, private (RFC 1918, unique local),
//! link-local (which holds the cloud metadata endpoints), carrier-grade
//! NAT, unspecified, multicast or broadcast. Literal addresses are checked
//! when the URL is saved and again before each request ([`check_url`]);
//! names are checked on the addresses they resolve to *when the request
//! is sent* ([`PublicOnly`], a resolver wrapped around the HTTP
//! client's), so a name that changes its answer after the URL was saved
//! cannot sneak past it. Clients that use it follow no redirects and use
//! no proxy (a proxy would resolve the target itself, past the check).
//! `allow_private_webhooks` and `allow_private_provider_urls` turn the
//! address check off (local setups); provider URLs in the configuration
//! file are the operator's and are not checked.

use std::net::{IpAddr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether `ip` is inside a network a webhook must not reach.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                return is_internal(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80 // link-local
                || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        }
    }
}

/// The IPv4 address inside an IPv6 one that reaches it: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`) or
/// 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(v6: std::net::Ipv6Addr) -> Option<std::net::Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = v6.segments();
    let tail = |hi: u16, lo: u16| {
        let [a, b] = hi.to_be_bytes();
        let [c, d] = lo.to_be_bytes();
        std::net::Ipv4Addr::new(a, b, c, d)
    };
    if seg[..6] == [0; 6] && (seg[6] != 0 || seg[7] > 1) {
        return Some(tail(seg[6], seg[7]));
    }
    if seg[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return Some(tail(seg[6], seg[7]));
    }
    if seg[0] == 0x2002 {
        return Some(tail(seg[1], seg[2]));
    }
    None
}

/// A target refused before any connection.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("not a valid URL")]
    NotAUrl,
    #[error("the URL scheme must be http or https")]
    Scheme,
    #[error("the target {0} is an internal address")]
    Internal(IpAddr),
}

/// Checks what can be checked without DNS: scheme, and literal addresses.
pub fn check_url(url: &str, allow_internal: bool) -> Result<url::Url, Refused> {
    let parsed = url::Url::parse(url).map_err(|_| Refused::NotAUrl)?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(Refused::Scheme);
    }
    if !allow_internal {
        let literal = match parsed.host() {
            Some(url::Host::Ipv4(ip)) => Some(IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => Some(IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => None,
            None => return Err(Refused::NotAUrl),
        };
        if let Some(ip) = literal.filter(|ip| is_internal(*ip)) {
            return Err(Refused::Internal(ip));
        }
    }
    Ok(parsed)
}

/// A client that calls only public targets: names resolved by
/// [`PublicOnly`], no redirects, no proxy. Check literal addresses with
/// [`check_url`] before each request.
pub fn public_only(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    builder
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(PublicOnly)
        .no_proxy()
}

/// Resolves names with the system resolver, then drops internal addresses;
/// a name with nothing else left fails to resolve.
pub struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await?
                .filter(|a| !is_internal(a.ip()))
                .collect();
            if found.is_empty() {
                return Err(format!("{host} resolves to internal addresses only").into());
            }
            let addrs: Addrs = Box::new(found.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses() {
        for internal in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "::a00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "fec0::1",
        ] {
            let ip: IpAddr = internal.parse().expect("ip");
            assert!(is_internal(ip), "{internal}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "100.128.0.1",
            "64:ff9b::808:808",
            "2002:808:808::",
        ] {
            let ip: IpAddr = public.parse().expect("ip");
            assert!(!is_internal(ip), "{public}");
        }
    }

    #[test]
    fn urls() {
        assert!(check_url("https://example.com/hook", false).is_ok());
        assert!(matches!(
            check_url("ftp://example.com/", false),
            Err(Refused::Scheme)
        ));
        assert!(matches!(
            check_url("http://127.0.0.1:9000/", false),
            Err(Refused::Internal(_))
        ));
        assert!(matches!(
            check_url("http://[::1]/", false),
            Err(Refused::Internal(_))
        ));
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        assert!(matches!(
            check_url("not a url", true),
            Err(Refused::NotAUrl)
        ));
    }
}
