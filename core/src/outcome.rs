//! Outcome classification: the one table every other policy reads.
//!
//! (the classification table is written by the resilience-policies work; the
//! shared vocabulary below is fixed so that every policy speaks it)

/// What an attempt's outcome proves about whether the server applied the request.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum Evidence {
    /// No request byte left the client.
    NotSent,
    /// Bytes reached the server, but a protocol-level signal proves it did not apply them.
    NotProcessed,
    /// Anything else before a complete response: the server may have applied it.
    MaybeProcessed,
    /// A response shows the server handled the request.
    Processed,
}

/// How an outcome moves the origin's circuit breaker.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Hash)]
pub enum BreakerEffect {
    /// The upstream answered healthily.
    Success,
    /// Evidence that the upstream is unhealthy.
    Failure,
    /// Says nothing about upstream health (local exhaustion, rate limiting, cancellation...).
    Ignore,
}
