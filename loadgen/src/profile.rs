//! The traffic profile of the `mixed` scenario: per-subscriber busy-hour
//! rates, read from TOML, so a carrier's busy hour can be replayed at a
//! chosen speed.

use serde::Deserialize;
use std::path::Path;

/// The profile shipped with the load generator (`profiles/busy-hour.toml`).
pub const DEFAULT_PROFILE: &str = include_str!("../profiles/busy-hour.toml");

#[derive(Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// REGISTER refreshes per subscriber per hour.
    pub registrations_per_hour: f64,
    /// PUBLISHes per subscriber per hour.
    pub publications_per_hour: f64,
    /// New SUBSCRIBE dialogs per subscriber per hour.
    pub subscriptions_per_hour: f64,
    /// Standing subscriptions per presentity, set up before the hour.
    pub watchers_per_presentity: usize,
    /// How many times faster than real time the hour is replayed.
    #[serde(default = "one")]
    pub time_scale: f64,
    /// Expires of the subscriptions, seconds.
    #[serde(default = "hour")]
    pub subscription_expires: u32,
}

fn one() -> f64 {
    1.0
}
fn hour() -> u32 {
    3600
}

impl Profile {
    /// Reads `path`, or the shipped profile when there is none.
    pub fn load(path: Option<&Path>) -> Result<Profile, String> {
        let (text, name) = match path {
            Some(p) => (std::fs::read_to_string(p).map_err(|e| format!("profile {}: {e}", p.display()))?, p.display().to_string()),
            None => (DEFAULT_PROFILE.to_string(), "the shipped busy-hour profile".into()),
        };
        let p: Profile = toml::from_str(&text).map_err(|e| format!("profile {name}: {e}"))?;
        p.check().map_err(|e| format!("profile {name}: {e}"))?;
        Ok(p)
    }

    fn check(&self) -> Result<(), String> {
        let rates = [self.registrations_per_hour, self.publications_per_hour, self.subscriptions_per_hour];
        if rates.iter().any(|r| !r.is_finite() || *r < 0.0) || rates.iter().sum::<f64>() <= 0.0 {
            return Err("the per-hour rates must be non-negative and not all zero".into());
        }
        if !(self.time_scale.is_finite() && self.time_scale > 0.0) {
            return Err("time_scale must be positive".into());
        }
        if self.subscription_expires == 0 {
            return Err("subscription_expires must be positive".into());
        }
        Ok(())
    }

    /// Transactions per second for `users` subscribers at the profile's
    /// replay speed.
    pub fn rate(&self, users: usize) -> f64 {
        self.weights().iter().sum::<f64>() * users as f64 / 3600.0 * self.time_scale
    }

    /// Relative weights of REGISTER, PUBLISH and SUBSCRIBE.
    pub fn weights(&self) -> [f64; 3] {
        [self.registrations_per_hour, self.publications_per_hour, self.subscriptions_per_hour]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_profile_loads_and_gives_a_rate() {
        let p = Profile::load(None).unwrap();
        assert_eq!(p.watchers_per_presentity, 4);
        // 9 transactions per subscriber-hour, 60x: 100,000 users -> 15,000/s.
        assert!((p.rate(100_000) - 15_000.0).abs() < 1e-6, "{}", p.rate(100_000));
    }

    #[test]
    fn bad_profiles_are_refused_with_the_reason() {
        let bad = toml::from_str::<Profile>(
            "registrations_per_hour = 1.0\npublications_per_hour = 1.0\nsubscriptions_per_hour = 1.0\nwatchers_per_presentity = 1\nbogus = 2\n",
        );
        assert!(bad.unwrap_err().to_string().contains("bogus"));
        let zero = Profile {
            registrations_per_hour: 0.0,
            publications_per_hour: 0.0,
            subscriptions_per_hour: 0.0,
            watchers_per_presentity: 1,
            time_scale: 1.0,
            subscription_expires: 60,
        };
        assert!(zero.check().unwrap_err().contains("not all zero"));
    }
}
