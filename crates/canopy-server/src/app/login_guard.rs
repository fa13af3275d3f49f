//! What a password check may cost: the login guard.
//!
//! Checking a password is argon2id (19 MiB, tens of milliseconds of CPU): the most expensive
//! thing an anonymous caller can ask for. Without limits, 32 clients flooding `login` took a
//! server from 26 MB to 8.7 GB. The guard puts three bounds on it:
//!
//! - **Concurrency**: every hash and check in the process (login, a password set or changed,
//!   a user created with one) goes through one [`canopy_auth::password::Hasher`]: at most
//!   [`LoginLimits::hash_concurrency`] run at once, the others wait (asynchronously: a request
//!   abandoned while waiting costs nothing) for up to 10 s, then get 503. Peak memory for
//!   hashing is `hash_concurrency × 19 MiB`, and each hash gives its memory back when done.
//! - **Per source address**: at most [`LoginLimits::per_address_per_minute`] attempts a minute
//!   (after a burst of [`LoginLimits::address_burst`]) from one IPv4 address or IPv6 /64;
//!   beyond it `429 Too Many Requests` with `Retry-After`, before any database read or hash.
//! - **Per user name**: likewise per attempted user name (known or not: the answer for an
//!   unknown user must not differ from a known one's), which bounds password guessing against
//!   one account however many addresses the guesser has. Checking the current password when a
//!   user changes their own counts against the same limit.
//!
//! Limits are GCRA buckets of the `governor` crate, keyed; buckets that have refilled are
//! forgotten once a minute, so memory follows the callers of the last minute.
//!
//! **The source address** is the TCP peer's. Behind a reverse proxy every peer is the proxy,
//! so the guard believes `X-Forwarded-For` only when the peer is one of
//! [`LoginLimits::trusted_proxies`] (none by default: a header anyone can send must not choose
//! their own bucket). The client is then the right-most address of the header that is not a
//! trusted proxy.

use std::net::{IpAddr, Ipv6Addr};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use canopy_auth::password::{HashParams, Hasher};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use super::AppError;

/// How often buckets that have refilled are forgotten.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The limits on password checks (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginLimits {
    /// Sustained login attempts per minute from one source address (IPv4 address or IPv6
    /// /64); 0 turns this limit off.
    pub per_address_per_minute: u32,
    /// Attempts one source address may make at once after being idle.
    pub address_burst: u32,
    /// Sustained login attempts per minute for one user name; 0 turns this limit off.
    pub per_user_per_minute: u32,
    /// Attempts for one user name at once after being idle.
    pub user_burst: u32,
    /// Password hashes and checks running at once in the process (at least 1).
    pub hash_concurrency: usize,
    /// argon2id cost of new password hashes.
    pub hash_params: HashParams,
    /// Reverse proxies (addresses or ranges) whose `X-Forwarded-For` names the client.
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for LoginLimits {
    fn default() -> LoginLimits {
        LoginLimits {
            per_address_per_minute: 20,
            address_burst: 20,
            per_user_per_minute: 10,
            user_burst: 10,
            hash_concurrency: Hasher::default_concurrency(),
            hash_params: HashParams::OWASP,
            trusted_proxies: Vec::new(),
        }
    }
}

/// The guard itself: the hasher and the two keyed limiters.
pub(crate) struct LoginGuard {
    hasher: Hasher,
    by_address: Option<DefaultKeyedRateLimiter<IpAddr>>,
    by_user: Option<DefaultKeyedRateLimiter<String>>,
    trusted_proxies: Vec<ipnet::IpNet>,
    last_sweep: Mutex<Instant>,
}

fn limiter<K: std::hash::Hash + Eq + Clone>(
    per_minute: u32,
    burst: u32,
) -> Option<DefaultKeyedRateLimiter<K>> {
    let per_minute = NonZeroU32::new(per_minute)?;
    let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
    Some(RateLimiter::keyed(
        Quota::per_minute(per_minute).allow_burst(burst),
    ))
}

impl LoginGuard {
    pub(crate) fn new(limits: &LoginLimits) -> LoginGuard {
        LoginGuard {
            hasher: Hasher::new(limits.hash_concurrency, limits.hash_params),
            by_address: limiter(limits.per_address_per_minute, limits.address_burst),
            by_user: limiter(limits.per_user_per_minute, limits.user_burst),
            trusted_proxies: limits.trusted_proxies.clone(),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    /// The process's one password hasher.
    pub(crate) fn hasher(&self) -> &Hasher {
        &self.hasher
    }

    /// Counts one password check for `user` from `source` (unknown when `None`), or refuses it
    /// with 429 and the seconds until it would pass.
    pub(crate) fn admit(&self, source: Option<IpAddr>, user: &str) -> Result<(), AppError> {
        self.sweep();
        if let (Some(limiter), Some(addr)) = (&self.by_address, source) {
            check(limiter, &bucket_of(addr))?;
        }
        if let Some(limiter) = &self.by_user {
            check(limiter, &user.to_lowercase())?;
        }
        Ok(())
    }

    /// The client's address: the peer, or what a trusted proxy says in `X-Forwarded-For`
    /// (`forwarded_for`: the header's values joined with `,`).
    pub(crate) fn client_address(
        &self,
        peer: Option<IpAddr>,
        forwarded_for: Option<&str>,
    ) -> Option<IpAddr> {
        client_address(peer, forwarded_for, &self.trusted_proxies)
    }

    /// Forgets refilled buckets, at most once per [`SWEEP_EVERY`].
    fn sweep(&self) {
        let Ok(mut last) = self.last_sweep.try_lock() else {
            return;
        };
        if last.elapsed() < SWEEP_EVERY {
            return;
        }
        *last = Instant::now();
        drop(last);
        if let Some(l) = &self.by_address {
            l.retain_recent();
            l.shrink_to_fit();
        }
        if let Some(l) = &self.by_user {
            l.retain_recent();
            l.shrink_to_fit();
        }
    }
}

fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), AppError> {
    limiter.check_key(key).map_err(|not_until| {
        let wait = not_until.wait_time_from(limiter.clock().now());
        // Whole seconds, rounded up: a client retrying after that many is let through.
        AppError::RateLimited(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    })
}

/// The bucket an address counts in: IPv4 addresses alone, IPv6 by /64 (one host usually has a
/// whole /64 to pick addresses from).
fn bucket_of(addr: IpAddr) -> IpAddr {
    match addr.to_canonical() {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => IpAddr::V6(Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
    }
}

/// See [`LoginGuard::client_address`].
pub(crate) fn client_address(
    peer: Option<IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<IpAddr> {
    let peer = peer?.to_canonical();
    let is_trusted = |a: &IpAddr| trusted.iter().any(|n| n.contains(a));
    let (true, Some(header)) = (is_trusted(&peer), forwarded_for) else {
        return Some(peer);
    };
    // Right to left: each trusted proxy appended the address it got the request from.
    let mut client = peer;
    for hop in header.rsplit(',') {
        match hop.trim().parse::<IpAddr>() {
            Ok(a) => {
                client = a.to_canonical();
                if !is_trusted(&client) {
                    break;
                }
            }
            // Garbage (or a port, or an obfuscated name): stop at the last hop we believe.
            Err(_) => break,
        }
    }
    Some(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &[&str]) -> Vec<ipnet::IpNet> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn forwarded_for_counts_only_from_trusted_proxies() {
        let trusted = nets(&["10.0.0.0/8", "::1/128"]);
        // Not a trusted peer: its header is ignored.
        assert_eq!(
            client_address(Some(ip("192.0.2.7")), Some("198.51.100.1"), &trusted),
            Some(ip("192.0.2.7"))
        );
        // Nothing trusted by default.
        assert_eq!(
            client_address(Some(ip("10.1.1.1")), Some("198.51.100.1"), &[]),
            Some(ip("10.1.1.1"))
        );
        // A trusted proxy: the right-most untrusted hop; what the client wrote itself further
        // left is ignored.
        assert_eq!(
            client_address(
                Some(ip("10.1.1.1")),
                Some("203.0.113.9, 198.51.100.1, 10.2.2.2"),
                &trusted
            ),
            Some(ip("198.51.100.1"))
        );
        // Garbage stops the walk at the last believable hop.
        assert_eq!(
            client_address(Some(ip("::1")), Some("198.51.100.1, not-an-ip"), &trusted),
            Some(ip("::1"))
        );
        // IPv4-mapped peers are IPv4 peers.
        assert_eq!(
            client_address(Some(ip("::ffff:10.0.0.5")), Some("198.51.100.2"), &trusted),
            Some(ip("198.51.100.2"))
        );
        assert_eq!(client_address(None, Some("198.51.100.1"), &trusted), None);
    }

    #[test]
    fn ipv6_addresses_share_their_slash_64() {
        assert_eq!(bucket_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(
            bucket_of(ip("2001:db8:1:2:ffff::1")),
            bucket_of(ip("2001:db8:1:2::9"))
        );
        assert_ne!(
            bucket_of(ip("2001:db8:1:3::1")),
            bucket_of(ip("2001:db8:1:2::1"))
        );
        assert_eq!(bucket_of(ip("192.0.2.1")), ip("192.0.2.1"));
    }

    #[test]
    fn limits_apply_per_address_and_per_user_name() {
        let guard = LoginGuard::new(&LoginLimits {
            per_address_per_minute: 1,
            address_burst: 3,
            per_user_per_minute: 1,
            user_burst: 2,
            hash_concurrency: 1,
            hash_params: HashParams::INSECURE_FAST_FOR_TESTS,
            trusted_proxies: Vec::new(),
        });
        let a = Some(ip("192.0.2.1"));
        // Two attempts for alice, then her name is limited (from any address, any case).
        guard.admit(a, "alice").unwrap();
        guard.admit(Some(ip("192.0.2.2")), "alice").unwrap();
        let e = guard.admit(Some(ip("192.0.2.3")), "ALICE").unwrap_err();
        let AppError::RateLimited(secs) = e else {
            panic!("{e:?}")
        };
        assert!((1..=60).contains(&secs), "{secs}");
        // The address has two attempts left, then it is limited for every name, known or not.
        guard.admit(a, "bob").unwrap();
        guard.admit(a, "dave").unwrap();
        assert!(matches!(
            guard.admit(a, "no-such-user"),
            Err(AppError::RateLimited(_))
        ));
        // Unknown sources are limited by name only.
        guard.admit(None, "carol").unwrap();
        // 0 turns a limit off.
        let open = LoginGuard::new(&LoginLimits {
            per_address_per_minute: 0,
            per_user_per_minute: 0,
            ..LoginLimits::default()
        });
        for _ in 0..100 {
            open.admit(a, "alice").unwrap();
        }
    }
}
