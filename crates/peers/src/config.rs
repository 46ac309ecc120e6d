//! Configuration: limits, ping, idle, backoff, authorization and drain settings.

use std::time::Duration;

/// Everything the [`PeerManager`](crate::PeerManager) can be tuned with.
///
/// Build it from [`PeersConfig::default`] and change the fields you need (struct update syntax
/// works: `PeersConfig { idle_timeout: None, ..PeersConfig::default() }`); the manager checks it
/// with [`PeersConfig::validate`] when it is constructed.
///
/// ```
/// use std::time::Duration;
/// let mut config = sinew_peers::PeersConfig::default();
/// config.limits.max_inbound = 100;
/// config.idle_timeout = None;
/// config.ping_interval = Duration::from_secs(5);
/// config.ping_timeout = Duration::from_secs(2);
/// assert!(config.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct PeersConfig {
    /// Connection limits.
    pub limits: ConnectionLimits,
    /// How often an established connection is pinged. Default 15 s.
    pub ping_interval: Duration,
    /// How long a ping waits for its pong before it counts as missed. Must not exceed
    /// `ping_interval`. Default 10 s.
    pub ping_timeout: Duration,
    /// Consecutive missed pings after which the connection is closed with
    /// [`Reason::PingTimeout`](crate::Reason::PingTimeout). At least 1. Default 3.
    pub max_missed_pings: u32,
    /// A connection with no application traffic and no open application stream for this long is
    /// closed with [`Reason::Idle`](crate::Reason::Idle); `None` disables it. Connections of
    /// persistent peers are exempt. Default `Some(60 s)`.
    pub idle_timeout: Option<Duration>,
    /// Redial backoff for persistent peers.
    pub backoff: BackoffConfig,
    /// How long an established connection may stay unauthorized before it is closed with
    /// [`Reason::Unauthorized`](crate::Reason::Unauthorized). Default 10 s.
    pub auth_timeout: Duration,
    /// `true`: the default policy authorizes every connection as soon as it is established.
    /// `false`: each peer must be [`authorize`](crate::PeerManager::authorize)d. Default `true`.
    pub default_authorized: bool,
    /// How long a draining connection may take to finish before it is closed. Default 5 s.
    pub drain_timeout: Duration,
}

/// Connection limits. A connection counts toward `max_total`, `max_inbound` or `max_outbound`
/// and (inbound only) `max_per_ip` in every state, from [`inbound`](crate::PeerManager::inbound)
/// or [`dial`](crate::PeerManager::dial) until the node reports its end; it counts toward
/// `max_pending_inbound` or `max_pending_outbound` only until its handshake completes or fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// All connections, in both directions. Default 1024.
    pub max_total: usize,
    /// Connections the remotes opened. Default 768.
    pub max_inbound: usize,
    /// Connections we opened. Default 256.
    pub max_outbound: usize,
    /// Inbound connections whose handshake has not finished yet. Default 64.
    pub max_pending_inbound: usize,
    /// Outbound connections whose handshake has not finished yet (counted apart from inbound
    /// ones, so that silent inbound sockets cannot block our own dials). Default 64.
    pub max_pending_outbound: usize,
    /// Inbound connections from one remote IP address (IPv4-mapped IPv6 addresses count as
    /// their IPv4 address, IPv6 addresses by their /64). Outbound connections do not count: we
    /// chose those. Default 16.
    pub max_per_ip: usize,
    /// Inbound handshakes in progress from one remote address (counted as `max_per_ip`), so
    /// that a few addresses cannot hold every pending slot. Default 8.
    pub max_pending_per_ip: usize,
}

/// Redial backoff for persistent peers.
///
/// After the `n`-th consecutive failure (a failed dial, or a disconnect) the next dial waits
/// `min(initial * multiplier^(n-1), max)`, scaled by a random factor in
/// `[1 - jitter, 1 + jitter]` drawn from the manager's seeded RNG. The jitter is applied after
/// the cap, so a delay may exceed `max` by up to `jitter * max`: peers that all sit at the cap
/// still spread out.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackoffConfig {
    /// The first delay. Default 500 ms.
    pub initial: Duration,
    /// The largest delay before jitter. Default 60 s.
    pub max: Duration,
    /// Growth factor per failure, at least 1. Default 2.
    pub multiplier: f64,
    /// Jitter fraction in `[0, 1)`. Default 0.2.
    pub jitter: f64,
    /// A persistent peer's failure count resets only after a connection to it has stayed up this
    /// long, so a peer that accepts and drops at once still backs off. Default 30 s.
    pub stable_after: Duration,
}

/// Why a [`PeersConfig`] is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("{0} must be greater than zero")]
    ZeroDuration(&'static str),
    /// `ping_timeout` is longer than `ping_interval`.
    #[error("ping_timeout must not exceed ping_interval")]
    PingTimeoutAboveInterval,
    /// `max_missed_pings` is zero.
    #[error("max_missed_pings must be at least 1")]
    ZeroMissedPings,
    /// `backoff.initial` is larger than `backoff.max`.
    #[error("backoff.initial must not exceed backoff.max")]
    BackoffInitialAboveMax,
    /// `backoff.multiplier` is below 1 or not finite.
    #[error("backoff.multiplier must be a finite number >= 1")]
    BackoffMultiplier,
    /// `backoff.jitter` is outside `[0, 1)`.
    #[error("backoff.jitter must be in [0, 1)")]
    BackoffJitter,
}

impl Default for PeersConfig {
    fn default() -> Self {
        Self {
            limits: ConnectionLimits::default(),
            ping_interval: Duration::from_secs(15),
            ping_timeout: Duration::from_secs(10),
            max_missed_pings: 3,
            idle_timeout: Some(Duration::from_secs(60)),
            backoff: BackoffConfig::default(),
            auth_timeout: Duration::from_secs(10),
            default_authorized: true,
            drain_timeout: Duration::from_secs(5),
        }
    }
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        Self {
            max_total: 1024,
            max_inbound: 768,
            max_outbound: 256,
            max_pending_inbound: 64,
            max_pending_outbound: 64,
            max_per_ip: 16,
            max_pending_per_ip: 8,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(500),
            max: Duration::from_secs(60),
            multiplier: 2.0,
            jitter: 0.2,
            stable_after: Duration::from_secs(30),
        }
    }
}

impl PeersConfig {
    /// Checks the settings that must hold for the deadlines to make sense. Zero limits are
    /// allowed (they refuse everything of that kind).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("ping_interval", self.ping_interval),
            ("ping_timeout", self.ping_timeout),
            ("auth_timeout", self.auth_timeout),
            ("drain_timeout", self.drain_timeout),
            ("backoff.initial", self.backoff.initial),
            ("idle_timeout", self.idle_timeout.unwrap_or(Duration::MAX)),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, d)| d.is_zero()) {
            return Err(ConfigError::ZeroDuration(name));
        }
        if self.ping_timeout > self.ping_interval {
            return Err(ConfigError::PingTimeoutAboveInterval);
        }
        if self.max_missed_pings == 0 {
            return Err(ConfigError::ZeroMissedPings);
        }
        let backoff = &self.backoff;
        if backoff.initial > backoff.max {
            return Err(ConfigError::BackoffInitialAboveMax);
        }
        if !backoff.multiplier.is_finite() || backoff.multiplier < 1.0 {
            return Err(ConfigError::BackoffMultiplier);
        }
        if !(0.0..1.0).contains(&backoff.jitter) {
            return Err(ConfigError::BackoffJitter);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation_and_validate() {
        let c = PeersConfig::default();
        assert_eq!(c.limits.max_total, 1024);
        assert_eq!(c.limits.max_inbound, 768);
        assert_eq!(c.limits.max_outbound, 256);
        assert_eq!((c.limits.max_pending_inbound, c.limits.max_pending_outbound), (64, 64));
        assert_eq!(c.limits.max_per_ip, 16);
        assert_eq!(c.ping_interval, Duration::from_secs(15));
        assert_eq!(c.ping_timeout, Duration::from_secs(10));
        assert_eq!(c.max_missed_pings, 3);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.backoff.initial, Duration::from_millis(500));
        assert_eq!(c.backoff.max, Duration::from_secs(60));
        assert_eq!(c.backoff.multiplier, 2.0);
        assert_eq!(c.backoff.jitter, 0.2);
        assert_eq!(c.backoff.stable_after, Duration::from_secs(30));
        assert_eq!(c.auth_timeout, Duration::from_secs(10));
        assert!(c.default_authorized);
        assert_eq!(c.drain_timeout, Duration::from_secs(5));
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn invalid_settings_are_refused_with_their_reason() {
        let default = PeersConfig::default;
        let backoff = BackoffConfig::default;
        let cases = [
            (
                PeersConfig { ping_timeout: Duration::from_secs(16), ..default() },
                ConfigError::PingTimeoutAboveInterval,
            ),
            (
                PeersConfig { idle_timeout: Some(Duration::ZERO), ..default() },
                ConfigError::ZeroDuration("idle_timeout"),
            ),
            (PeersConfig { max_missed_pings: 0, ..default() }, ConfigError::ZeroMissedPings),
            (
                PeersConfig { backoff: BackoffConfig { jitter: 1.0, ..backoff() }, ..default() },
                ConfigError::BackoffJitter,
            ),
            (
                PeersConfig {
                    backoff: BackoffConfig { multiplier: f64::NAN, ..backoff() },
                    ..default()
                },
                ConfigError::BackoffMultiplier,
            ),
            (
                PeersConfig {
                    backoff: BackoffConfig { initial: Duration::from_secs(61), ..backoff() },
                    ..default()
                },
                ConfigError::BackoffInitialAboveMax,
            ),
        ];
        for (config, error) in cases {
            assert_eq!(config.validate(), Err(error));
        }
        let no_idle = PeersConfig { idle_timeout: None, ..default() };
        assert_eq!(no_idle.validate(), Ok(()));
    }
}
