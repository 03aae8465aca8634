//! Which peers are proxies of ours, whose headers about the request are believed.

use std::{net::IpAddr, sync::Arc};

use ipnet::IpNet;

#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    pub fn trusts(&self, peer: IpAddr) -> bool {
        // A dual-stack listener sees IPv4 peers as ::ffff:a.b.c.d.
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_peers_match_whether_or_not_mapped_to_ipv6() {
        let proxies = TrustedProxies::new(&["10.0.0.0/8".parse().unwrap(), "fd00::/8".parse().unwrap()]);
        for (peer, trusted) in
            [("10.1.2.3", true), ("::ffff:10.1.2.3", true), ("11.0.0.1", false), ("fd00::1", true), ("::1", false)]
        {
            assert_eq!(proxies.trusts(peer.parse().unwrap()), trusted, "{peer}");
        }
        assert!(!TrustedProxies::default().trusts("127.0.0.1".parse().unwrap()));
    }
}
