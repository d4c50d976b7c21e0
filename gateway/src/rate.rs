//! Publish rate limits: a token bucket per connection and channel namespace.
//!
//! A bucket holds up to `publish_burst` tokens and gains `publish_rate` a second; each
//! publication takes one. A publish that finds the bucket empty is refused with
//! [`ErrorCode::LimitExceeded`] and takes nothing, so a client that backs off gets through.

use std::collections::HashMap;

use herald_core::channel;
use herald_core::codes::{ErrorCode, Refusal};
use herald_core::config::ChannelRules;
use tokio::time::Instant;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The publish budgets of one connection.
#[derive(Default)]
pub struct PublishLimits {
    buckets: HashMap<String, Bucket>,
}

impl PublishLimits {
    /// Takes a token for a publication on `channel`, whose rules are `rules`.
    pub fn take(&mut self, channel: &str, rules: &ChannelRules) -> Result<(), Refusal> {
        if rules.publish_rate <= 0.0 {
            return Ok(());
        }
        let burst = f64::from(rules.publish_burst.max(1));
        let now = Instant::now();
        let namespace = channel::namespace(channel);
        let bucket = match self.buckets.get_mut(namespace) {
            Some(bucket) => bucket,
            None => self.buckets.entry(namespace.to_string()).or_insert(Bucket {
                tokens: burst,
                updated: now,
            }),
        };
        let elapsed = now.duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rules.publish_rate).min(burst);
        bucket.updated = now;
        if bucket.tokens < 1.0 {
            return Err(Refusal::new(
                ErrorCode::LimitExceeded,
                format!(
                    "publish rate limit of {}/s on this channel reached",
                    rules.publish_rate
                ),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rules(rate: f64, burst: u32) -> ChannelRules {
        ChannelRules {
            publish_rate: rate,
            publish_burst: burst,
            ..ChannelRules::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_then_the_rate() {
        let mut limits = PublishLimits::default();
        let rules = rules(2.0, 3);
        for _ in 0..3 {
            assert!(limits.take("chat:a", &rules).is_ok());
        }
        let refusal = limits.take("chat:b", &rules).unwrap_err();
        assert_eq!(refusal.code, ErrorCode::LimitExceeded);
        // Other namespaces have budgets of their own.
        assert!(limits.take("news", &rules).is_ok());
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(limits.take("chat:a", &rules).is_ok());
        assert!(limits.take("chat:a", &rules).is_err());
    }

    #[test]
    fn no_rate_means_no_limit() {
        let mut limits = PublishLimits::default();
        for _ in 0..10_000 {
            assert!(limits.take("chat:a", &rules(0.0, 1)).is_ok());
        }
    }
}
