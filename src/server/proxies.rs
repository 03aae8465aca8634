//! Which peers are proxies of ours, whose headers about the request are believed, and the
//! client address every request is served as: resolved here once, for every transport.

use std::{
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::{
    extract::{ConnectInfo, Request, State},
    http::{Extensions, HeaderMap, HeaderName},
    middleware::Next,
    response::Response,
};
use ipnet::IpNet;

use crate::config::ForwardedHeader;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies {
    nets: Arc<[IpNet]>,
    header: ForwardedHeader,
}

/// The address a request is served as: its peer, or, when the peer is a trusted proxy,
/// the client that proxy forwarded for. The rate limits, the security log, the sessions
/// and the access log all see this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientAddr(pub IpAddr);

impl ClientAddr {
    /// The client address of a request that went through [`client_address`].
    pub fn of(extensions: &Extensions) -> Option<IpAddr> {
        extensions.get::<Self>().map(|c| c.0)
    }
}

impl TrustedProxies {
    pub fn new(nets: &[IpNet], header: ForwardedHeader) -> Self {
        Self { nets: nets.into(), header }
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.nets.iter().any(|net| net.contains(&peer))
    }

    /// The client behind `peer`: the peer itself unless it is trusted; else, walking the
    /// forwarded hops from the right (the nearest), the first one not trusted. Hops to its
    /// left were written by the client or by proxies it chose, and are not believed. A hop
    /// that is not an address (`unknown`, an obfuscated name) ends the walk at the
    /// trusted hop that wrote it; when every hop is trusted, the furthest one is the client.
    pub fn client(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if !self.trusts(client) {
            return client;
        }
        let hops = match self.header {
            ForwardedHeader::XForwardedFor => hops(headers, &HeaderName::from_static("x-forwarded-for"), whole),
            ForwardedHeader::Forwarded => hops(headers, &http::header::FORWARDED, forwarded_for),
        };
        for hop in hops.iter().rev() {
            match hop.as_deref().and_then(address) {
                Some(ip) if self.trusts(ip) => client = ip,
                Some(ip) => return ip,
                None => return client,
            }
        }
        client
    }
}

/// Sets the request's [`ClientAddr`] from its peer (told by the connection) and, from a
/// trusted proxy, its forwarding header.
pub async fn client_address(State(proxies): State<TrustedProxies>, mut request: Request, next: Next) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>().copied() {
        let client = proxies.client(peer.ip(), request.headers());
        request.extensions_mut().insert(ClientAddr(client));
    }
    next.run(request).await
}

/// The hops of every line of `name` in order, joined as one list (RFC 9110 §5.3), each
/// through `hop` (`None`: a hop that names no address).
fn hops(headers: &HeaderMap, name: &HeaderName, hop: fn(&str) -> Option<&str>) -> Vec<Option<String>> {
    headers
        .get_all(name)
        .iter()
        .flat_map(|line| match line.to_str() {
            Ok(line) => line.split(',').map(|element| hop(element.trim()).map(str::to_owned)).collect(),
            // A line that is not text is one hop that names nothing.
            Err(_) => vec![None],
        })
        .collect()
}

/// An `X-Forwarded-For` element is the hop's address itself.
fn whole(element: &str) -> Option<&str> {
    Some(element)
}

/// The `for=` of one RFC 7239 element (`for=192.0.2.60;proto=http`), unquoted.
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.trim().split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| value.trim().trim_matches('"'))
    })
}

/// An address as proxies write it: `192.0.2.1`, `2001:db8::1`, or with a port
/// (`192.0.2.1:4711`, `[2001:db8::1]:4711`, RFC 7239's `[2001:db8::1]`).
fn address(hop: &str) -> Option<IpAddr> {
    let ip = if let Some(bracketed) = hop.strip_prefix('[') {
        bracketed.split_once(']')?.0.parse().ok()?
    } else {
        match hop.parse() {
            Ok(ip) => ip,
            Err(_) => hop.parse::<SocketAddr>().ok()?.ip(),
        }
    };
    Some(IpAddr::to_canonical(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proxies(header: ForwardedHeader) -> TrustedProxies {
        TrustedProxies::new(&["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()], header)
    }

    fn headers(name: &str, lines: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for line in lines {
            headers.append(HeaderName::from_bytes(name.as_bytes()).unwrap(), line.parse().unwrap());
        }
        headers
    }

    #[test]
    fn ipv4_peers_match_whether_or_not_mapped_to_ipv6() {
        let proxies = proxies(ForwardedHeader::XForwardedFor);
        for (peer, trusted) in
            [("10.1.2.3", true), ("::ffff:10.1.2.3", true), ("11.0.0.1", false), ("fd00::1", true), ("::1", false)]
        {
            assert_eq!(proxies.trusts(peer.parse().unwrap()), trusted, "{peer}");
        }
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn the_client_is_the_right_most_hop_not_trusted() {
        let proxies = proxies(ForwardedHeader::XForwardedFor);
        let client = |peer: &str, lines: &[&str]| {
            proxies.client(peer.parse().unwrap(), &headers("x-forwarded-for", lines)).to_string()
        };
        // A client's own (forged) entries are to the left of what our proxies appended.
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 203.0.113.7"]), "203.0.113.7");
        assert_eq!(client("10.0.0.1", &["6.6.6.6, 203.0.113.7, 10.0.0.9"]), "203.0.113.7");
        // Several lines are one list, in order.
        assert_eq!(client("10.0.0.1", &["6.6.6.6", "203.0.113.7", "10.0.0.9"]), "203.0.113.7");
        // An untrusted peer's header is ignored; so is a trusted peer's absent one.
        assert_eq!(client("203.0.113.9", &["6.6.6.6"]), "203.0.113.9");
        assert_eq!(client("::ffff:203.0.113.9", &["6.6.6.6"]), "203.0.113.9");
        assert_eq!(client("10.0.0.1", &[]), "10.0.0.1");
        // Mapped addresses and ports, as some proxies write them.
        assert_eq!(client("::ffff:10.0.0.1", &["::ffff:203.0.113.7"]), "203.0.113.7");
        assert_eq!(client("10.0.0.1", &["203.0.113.7:4711"]), "203.0.113.7");
        assert_eq!(client("10.0.0.1", &["[2001:db8::7]:4711"]), "2001:db8::7");
        // Every hop trusted: the furthest. A hop that is no address stops at the proxy that wrote it.
        assert_eq!(client("10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3");
        assert_eq!(client("10.0.0.1", &["203.0.113.7, unknown, 10.0.0.2"]), "10.0.0.2");
        assert_eq!(client("10.0.0.1", &["203.0.113.7, "]), "10.0.0.1");
        // The other header is the client's own word, never believed.
        let forwarded = headers("forwarded", &["for=6.6.6.6"]);
        assert_eq!(proxies.client("10.0.0.1".parse().unwrap(), &forwarded).to_string(), "10.0.0.1");
    }

    #[test]
    fn rfc_7239_for_parameters_are_read_when_configured() {
        let proxies = proxies(ForwardedHeader::Forwarded);
        let client =
            |lines: &[&str]| proxies.client("10.0.0.1".parse().unwrap(), &headers("forwarded", lines)).to_string();
        assert_eq!(client(&["for=6.6.6.6, for=203.0.113.7;proto=https"]), "203.0.113.7");
        assert_eq!(client(&["for=6.6.6.6", "For=\"[2001:db8:cafe::17]:4711\"", "for=10.0.0.2"]), "2001:db8:cafe::17");
        assert_eq!(client(&["proto=https;for=\"203.0.113.7:80\";by=10.0.0.1"]), "203.0.113.7");
        assert_eq!(client(&["for=203.0.113.7, for=_hidden"]), "10.0.0.1");
        assert_eq!(client(&["for=203.0.113.7, proto=http"]), "10.0.0.1");
        let xff = headers("x-forwarded-for", &["6.6.6.6"]);
        assert_eq!(proxies.client("10.0.0.1".parse().unwrap(), &xff).to_string(), "10.0.0.1");
    }
}
