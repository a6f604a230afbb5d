//! Requests the controller makes on a user's behalf, to destinations a ModelRollout names (gating
//! webhooks, notifications, golden sets): a destination policy the cluster admin sets
//! (`--outbound-allow`), checked after DNS resolution and before connecting, and no redirects (a
//! redirect would take a POST elsewhere as a GET). Anyone who may create a ModelRollout can name
//! such a destination; without the policy the controller would call the cloud's metadata address
//! or its own loopback for them.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Where the controller may connect on a user's behalf.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DestinationPolicy {
    /// Empty: every address but the denied ones ([`denied_by_default`]). Otherwise only these:
    /// networks (CIDRs) an address must fall in, or host names allowed as named.
    allow: Vec<Allowed>,
}

#[derive(Clone, Debug, PartialEq)]
enum Allowed {
    Net(IpNet),
    Host(String),
}

/// Loopback, link-local (the cloud metadata address 169.254.169.254 among them) and unspecified
/// addresses, and the metadata service's IPv6 address: the controller's own host and its
/// cloud's credentials, never a webhook's.
pub fn denied_by_default(ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    };
    match ip {
        IpAddr::V4(v4) => v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.octets()[0] == 0,
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
                || v6 == std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)
        }
    }
}

impl DestinationPolicy {
    /// From `--outbound-allow`: CIDRs (`10.0.0.0/8`, `127.0.0.1/32`) and host names.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        let allow = entries
            .iter()
            .map(|e| e.trim())
            .filter(|e| !e.is_empty())
            .map(|e| {
                if let Ok(net) = e.parse::<IpNet>() {
                    Ok(Allowed::Net(net))
                } else if let Ok(ip) = e.parse::<IpAddr>() {
                    Ok(Allowed::Net(IpNet::from(ip)))
                } else if e.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') {
                    Ok(Allowed::Host(e.to_ascii_lowercase()))
                } else {
                    Err(format!("--outbound-allow: {e:?} is neither a CIDR, an address nor a host name"))
                }
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { allow })
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        if self.allow.is_empty() {
            return !denied_by_default(ip);
        }
        self.allow.iter().any(|a| matches!(a, Allowed::Net(n) if n.contains(&ip)))
    }

    /// A host name allowed as named (its addresses then are not checked).
    fn allows_host(&self, host: &str) -> bool {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        self.allow.iter().any(|a| matches!(a, Allowed::Host(h) if *h == host))
    }

    /// Whether `url` may be called, as far as it says itself: an http(s) URL whose host, when an
    /// address, is allowed (a host name's addresses are checked when it resolves).
    pub fn check_url(&self, url: &str) -> Result<(), String> {
        let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url}: {e}"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(format!("{url}: only http and https are called"));
        }
        let ip = match parsed.host() {
            Some(url::Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(url::Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(url::Host::Domain(d)) => {
                return if self.allow.is_empty() || self.allows_host(d) || self.has_nets() {
                    Ok(())
                } else {
                    Err(refused(d))
                };
            }
            None => return Err(format!("{url}: no host")),
        };
        if self.allows_ip(ip) { Ok(()) } else { Err(refused(&ip.to_string())) }
    }

    fn has_nets(&self) -> bool {
        self.allow.iter().any(|a| matches!(a, Allowed::Net(_)))
    }
}

const REFUSED: &str = "refused by the controller's destination policy (--outbound-allow)";

fn refused(what: &str) -> String {
    format!("{what}: {REFUSED}")
}

/// Whether a request failed because the policy refused where its name resolved to: trying again
/// resolves to the same place, so callers do not retry it.
pub fn is_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = source {
        if err.to_string().contains(REFUSED) {
            return true;
        }
        source = err.source();
    }
    false
}

/// Resolves host names, keeping only the addresses the policy allows: the check happens after
/// DNS, so a name that points at a denied address is refused too.
struct PolicyResolver(Arc<DestinationPolicy>);

impl Resolve for PolicyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            if policy.allows_host(&host) {
                return Ok(Box::new(addrs.into_iter()) as Addrs);
            }
            let allowed: Vec<SocketAddr> = addrs.into_iter().filter(|a| policy.allows_ip(a.ip())).collect();
            if allowed.is_empty() {
                return Err(refused(&host).into());
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// The client for destinations a ModelRollout names, and the policy it keeps to.
#[derive(Clone)]
pub struct Outbound {
    pub client: reqwest::Client,
    pub policy: Arc<DestinationPolicy>,
}

impl Outbound {
    pub fn new(policy: DestinationPolicy) -> Self {
        // reqwest is built without a TLS crypto provider of its own: the process's (ring, as kube's).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let policy = Arc::new(policy);
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(PolicyResolver(policy.clone())))
            .build()
            .expect("a reqwest client");
        Self { client, policy }
    }

    /// A request to `url`, if the policy allows it as far as the URL says.
    pub fn request(&self, method: reqwest::Method, url: &str) -> Result<reqwest::RequestBuilder, String> {
        self.policy.check_url(url)?;
        Ok(self.client.request(method, url))
    }
}

impl Default for Outbound {
    fn default() -> Self {
        Self::new(DestinationPolicy::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn by_default_the_metadata_address_loopback_and_link_local_are_refused() {
        let p = DestinationPolicy::default();
        for url in [
            "http://169.254.169.254/latest/meta-data/",
            "http://127.0.0.1:8080/hook",
            "http://[::1]/hook",
            "http://[fe80::1]/hook",
            "http://0.0.0.0/hook",
            "http://[::ffff:169.254.169.254]/",
            "http://[fd00:ec2::254]/",
        ] {
            assert!(p.check_url(url).is_err(), "{url}");
        }
        for url in ["https://hooks.example.com/x", "http://10.96.0.10:8080/hook", "http://fraud-hooks.team-a.svc/x"] {
            assert_eq!(p.check_url(url), Ok(()), "{url}");
        }
        assert!(p.check_url("file:///etc/passwd").is_err());
    }

    #[test]
    fn an_allow_list_allows_only_what_it_names() {
        let p = DestinationPolicy::parse(&["127.0.0.0/8".into(), "hooks.example.com".into()]).unwrap();
        assert_eq!(p.check_url("http://127.0.0.1:9/hook"), Ok(()));
        assert_eq!(p.check_url("https://hooks.example.com/x"), Ok(()));
        assert!(p.check_url("http://10.96.0.10/").is_err());
        assert!(p.check_url("http://169.254.169.254/").is_err());
        assert!(!p.allows_ip("169.254.169.254".parse().unwrap()));
        assert!(DestinationPolicy::parse(&["not a host!".into()]).is_err());
    }

    /// After DNS: a name that resolves to a denied address is refused before any connection.
    #[tokio::test]
    async fn a_name_resolving_to_a_denied_address_is_refused_before_connecting() {
        let out = Outbound::default();
        let err = out.request(reqwest::Method::POST, "http://localhost:9/hook").unwrap().send().await.unwrap_err();
        assert!(format!("{err:?}").contains("destination policy"), "{err:?}");
        assert!(is_refused(&err), "{err:?}");
    }

    /// No redirect is followed: the 3xx is the answer.
    #[tokio::test]
    async fn a_redirect_is_the_answer_not_followed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let app = axum::Router::new().fallback(|| async {
                (axum::http::StatusCode::FOUND, [(axum::http::header::LOCATION, "http://169.254.169.254/")], "")
            });
            axum::serve(listener, app).await.unwrap();
        });
        let out = Outbound::new(DestinationPolicy::parse(&["127.0.0.0/8".into()]).unwrap());
        let r = out.request(reqwest::Method::POST, &format!("http://{addr}/hook")).unwrap().send().await.unwrap();
        assert_eq!(r.status(), 302);
    }
}
