import Foundation
import Synchronization

/// A token bucket per API key: `rate` requests a second on average, bursts of up to `burst`.
/// One client over its budget is answered 429 and slows no one else.
final class RateLimiter: Sendable {
    private struct Bucket {
        var tokens: Double
        var updated: ContinuousClock.Instant
    }

    let rate: Double
    let burst: Double
    private let buckets = Mutex<[String: Bucket]>([:])

    init(rate: Double, burst: Double) {
        precondition(rate > 0 && burst >= 1, "a rate limit lets some requests through")
        self.rate = rate
        self.burst = burst
    }

    /// Takes a token for `key`: `nil` when there was one, otherwise the whole seconds until
    /// the next one, for `Retry-After`.
    func take(_ key: String, now: ContinuousClock.Instant = .now) -> Int? {
        buckets.withLock { buckets in
            var bucket = buckets[key] ?? Bucket(tokens: burst, updated: now)
            let elapsed = now - bucket.updated
            let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
            bucket.tokens = min(burst, bucket.tokens + seconds * rate)
            bucket.updated = now
            defer { buckets[key] = bucket }
            guard bucket.tokens >= 1 else { return max(1, Int(((1 - bucket.tokens) / rate).rounded(.up))) }
            bucket.tokens -= 1
            return nil
        }
    }
}
