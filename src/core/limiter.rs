//! The first line against floods: an in-process limit per client address, in front of the
//! database counters, so that a flood is turned away before it costs a database write, a
//! hash or even a token check. IPv6 addresses count per /64, which one host or one
//! customer usually holds whole. The counts are per process: behind N replicas an address
//! gets up to N times this limit, and the database counters still hold across all.

use std::{
    net::{IpAddr, Ipv6Addr},
    num::NonZeroU32,
    time::Duration,
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use super::{ClientInfo, Error, Result, events, throttle::Action};

pub struct AddressLimiter {
    limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
}

impl AddressLimiter {
    /// `per_minute` calls per address, in bursts of as many; 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self { limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))) }
    }

    /// Counts a call from the client's address; refuses it past the limit.
    pub fn check(&self, action: Action, client: &ClientInfo) -> Result<()> {
        let Some(limiter) = &self.limiter else { return Ok(()) };
        let Some(network) = client.network() else { return Ok(()) };
        let Err(not_until) = limiter.check_key(&network) else { return Ok(()) };
        let wait = not_until.wait_time_from(limiter.clock().now());
        // Whole seconds, rounded up, for Retry-After.
        let retry_after = Duration::from_secs((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1));
        events::throttled(None, action.name(), "address", client, None, retry_after);
        Err(Error::Overloaded { retry_after })
    }

    /// Forgets addresses whose allowance has refilled; without this the map only grows.
    pub fn forget_quiet_addresses(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }
}

/// The key an address counts under: itself for IPv4 (IPv4-mapped IPv6 included), its /64
/// for IPv6.
pub fn network(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !(u128::from(u64::MAX)))),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(ip: &str) -> ClientInfo {
        ClientInfo::new(Some(ip.parse().unwrap()), None)
    }

    #[test]
    fn ipv6_counts_per_64_and_mapped_ipv4_as_ipv4() {
        let key = |ip: &str| network(ip.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::");
        assert_eq!(key("2001:db8:1:2:ffff:ffff:ffff:ffff"), "2001:db8:1:2::");
        assert_eq!(key("::ffff:192.0.2.7"), "192.0.2.7");
        assert_eq!(key("192.0.2.7"), "192.0.2.7");
    }

    #[test]
    fn an_address_past_its_allowance_is_refused_and_others_are_not() {
        let limiter = AddressLimiter::new(3);
        for _ in 0..3 {
            limiter.check(Action::Login, &client("2001:db8::1")).unwrap();
        }
        let refused = limiter.check(Action::Refresh, &client("2001:db8::2")).unwrap_err();
        assert!(matches!(refused, Error::Overloaded { retry_after } if retry_after >= Duration::from_secs(1)));
        limiter.check(Action::Login, &client("2001:db8:0:1::1")).unwrap();
        limiter.check(Action::Login, &client("192.0.2.1")).unwrap();
        assert!(AddressLimiter::new(0).check(Action::Login, &client("192.0.2.1")).is_ok());
    }
}
