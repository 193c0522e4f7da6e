//! Every table the server grows on a peer's behalf has a limit, and each
//! limit has one answer: 503 with Retry-After when the shard is out of
//! capacity (try again later, or elsewhere), 403 or 413 when a peer asks
//! for more than policy allows. Each hit is counted per shard
//! (`ShardStats::limited`), never absorbed as silent growth.

use super::reply::HandlerReply;
use crate::sip::HeaderName;

/// A limit, and what hitting it is answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// Server transactions per shard (capacity).
    ServerTransactions,
    /// SUBSCRIBEs waiting for their presentity shard's answer (capacity).
    PendingAsks,
    /// Watcher subscriptions held per shard (capacity).
    Subscriptions,
    /// Subscriptions one watcher identity holds on a shard (policy).
    SubscriptionsPerWatcher,
    /// Publications of one presentity (policy).
    PublicationsPerPresentity,
    /// The composed document of one presentity (policy).
    DocumentSize,
    /// Bindings of one AOR (policy).
    BindingsPerAor,
    /// The shard is overloaded: new initial requests are shed (capacity).
    Overload,
    /// The shard's journal holds more unwritten bytes than
    /// `[storage] max_pending_bytes`, or its device is failing: a change
    /// it could not make durable is refused (capacity).
    Journal,
    /// No node of the cluster serves the presentity's partition now: it is
    /// moving, or its owner failed and its lease has not expired yet
    /// (capacity: retried after Retry-After).
    Partition,
}

impl Limit {
    pub const ALL: [Limit; 10] = [
        Limit::ServerTransactions,
        Limit::PendingAsks,
        Limit::Subscriptions,
        Limit::SubscriptionsPerWatcher,
        Limit::PublicationsPerPresentity,
        Limit::DocumentSize,
        Limit::BindingsPerAor,
        Limit::Overload,
        Limit::Journal,
        Limit::Partition,
    ];

    /// Its place in per-limit counters.
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn name(self) -> &'static str {
        match self {
            Limit::ServerTransactions => "server_transactions",
            Limit::PendingAsks => "pending_asks",
            Limit::Subscriptions => "subscriptions",
            Limit::SubscriptionsPerWatcher => "subscriptions_per_watcher",
            Limit::PublicationsPerPresentity => "publications_per_presentity",
            Limit::DocumentSize => "document_size",
            Limit::BindingsPerAor => "bindings_per_aor",
            Limit::Overload => "overload",
            Limit::Journal => "journal",
            Limit::Partition => "partition",
        }
    }

    /// Status and reason: 503 for capacity, 403 or 413 for policy.
    pub fn status(self) -> (u16, &'static str) {
        match self {
            Limit::ServerTransactions | Limit::PendingAsks | Limit::Subscriptions | Limit::Overload | Limit::Journal | Limit::Partition => {
                (503, "Service Unavailable")
            }
            Limit::SubscriptionsPerWatcher => (403, "Forbidden: too many subscriptions for this watcher"),
            Limit::PublicationsPerPresentity => (403, "Forbidden: too many publications for this presentity"),
            Limit::DocumentSize => (413, "Request Entity Too Large: the presentity's document would exceed its limit"),
            Limit::BindingsPerAor => (403, "Forbidden: too many bindings for this AOR"),
        }
    }

    /// The handler's answer: capacity limits carry Retry-After.
    pub fn reply(self, retry_after: u32) -> HandlerReply {
        let (code, reason) = self.status();
        let r = HandlerReply::new(code, reason);
        let r = if code == 503 { r.with(HeaderName::RetryAfter, itoa::Buffer::new().format(retry_after).as_bytes()) } else { r };
        HandlerReply { limit: Some(self), ..r }
    }
}

/// The limits' values (`[limits]`), sized by default for a node of a
/// million subscribers over a few shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caps {
    pub server_transactions: usize,
    pub pending_asks: usize,
    pub subscriptions: usize,
    pub subscriptions_per_watcher: usize,
    pub publications_per_presentity: usize,
    /// Bytes of one presentity's composed document (the sum of its
    /// publications' elements, an upper bound of the composition).
    pub document_size: usize,
    pub bindings_per_aor: usize,
    /// Seconds a 503 asks the client to wait.
    pub retry_after: u32,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            // Timer J keeps each UDP transaction 32 s: room for 62,000
            // requests a second per shard (1.3 million measured 350 MiB of
            // RSS, the whole server).
            server_transactions: 2_000_000,
            pending_asks: 100_000,
            subscriptions: 2_000_000,
            subscriptions_per_watcher: 1_000,
            publications_per_presentity: 16,
            document_size: 128 * 1024,
            bindings_per_aor: 16,
            retry_after: 5,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_is_503_with_retry_after_policy_is_403_or_413() {
        for l in Limit::ALL {
            let r = l.reply(7);
            assert_eq!(r.limit, Some(l));
            let retry = r.headers.iter().find(|(n, _)| *n == HeaderName::RetryAfter).map(|(_, v)| v.clone());
            match r.code {
                503 => assert_eq!(retry.as_deref(), Some(&b"7"[..]), "{l:?}"),
                403 | 413 => assert!(retry.is_none(), "{l:?}"),
                c => panic!("{l:?} answers {c}"),
            }
            assert_eq!(Limit::ALL[l.index()], l);
        }
    }
}
