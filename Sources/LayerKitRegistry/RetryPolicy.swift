import Foundation

/// How often and how long to wait before asking again after a 429, a 5xx or a dropped
/// connection: exponential backoff from `initialDelay`, capped at `maximumDelay`, replaced by the
/// server's `Retry-After` when it sends one (capped at `maximumRetryAfter`).
public struct RetryPolicy: Sendable, Equatable {
    /// Attempts in all, the first included (1 means no retry).
    public var maximumAttempts: Int
    /// The wait before the first retry; doubled for each next one.
    public var initialDelay: Duration
    /// The longest wait between attempts when the server gives no `Retry-After`.
    public var maximumDelay: Duration
    /// The longest `Retry-After` honoured; a longer one is waited for this long.
    public var maximumRetryAfter: Duration

    /// Defaults: 5 attempts, 250 ms doubling up to 10 s, `Retry-After` honoured up to 60 s.
    public init(maximumAttempts: Int = 5, initialDelay: Duration = .milliseconds(250),
                maximumDelay: Duration = .seconds(10), maximumRetryAfter: Duration = .seconds(60)) {
        self.maximumAttempts = max(1, maximumAttempts)
        self.initialDelay = initialDelay
        self.maximumDelay = maximumDelay
        self.maximumRetryAfter = maximumRetryAfter
    }

    /// The wait before attempt `attempt + 1` (attempt counts from 1).
    func delay(after attempt: Int, retryAfter: String?) -> Duration {
        if let retryAfter, let seconds = Self.parseRetryAfter(retryAfter, now: Date()) {
            return min(.milliseconds(Int64(seconds * 1000)), maximumRetryAfter)
        }
        var delay = initialDelay
        for _ in 1..<max(1, attempt) { delay = delay * 2 }
        return min(delay, maximumDelay)
    }

    /// `Retry-After`: delta-seconds or an HTTP-date; seconds from `now`, never negative.
    static func parseRetryAfter(_ value: String, now: Date) -> Double? {
        let trimmed = value.trimmingCharacters(in: .whitespaces)
        if let seconds = Int(trimmed) { return seconds >= 0 ? Double(seconds) : nil }
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "GMT")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss zzz"
        guard let date = formatter.date(from: trimmed) else { return nil }
        return max(0, date.timeIntervalSince(now))
    }
}
