/// How long a fetched key set stays fresh according to its response headers (RFC 9111 §4.2.1, §5.1, §5.2.2).
public enum CacheControl {
    /// `max-age` minus `Age`, in seconds; 0 for `no-cache` / `no-store`; nil when the headers say nothing usable
    /// (no `max-age`, or a malformed one — then the caller's default applies). Directive names are case-insensitive;
    /// several `Cache-Control` fields are read as one list; a repeated `max-age` takes the smallest value.
    public static func freshnessLifetime(cacheControl: [String], age: String?) -> Double? {
        var maxAge: Double? = nil
        var noCache = false
        for field in cacheControl {
            for directive in field.split(separator: ",") {
                let parts = directive.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                let name = parts[0].trimmingWhitespace().lowercased()
                switch name {
                case "no-cache", "no-store":
                    noCache = true
                case "max-age":
                    guard parts.count == 2 else { continue }
                    var value = parts[1].trimmingWhitespace()
                    if value.count >= 2, value.first == "\"", value.last == "\"" { value = value.dropFirst().dropLast() }
                    guard let seconds = deltaSeconds(value) else { continue }
                    maxAge = min(maxAge ?? seconds, seconds)
                default:
                    continue
                }
            }
        }
        if noCache { return 0 }
        guard let maxAge else { return nil }
        let current = age.flatMap { deltaSeconds($0.trimmingWhitespace()) } ?? 0
        return max(0, maxAge - current)
    }

    /// delta-seconds: one or more digits; very large values saturate.
    static func deltaSeconds(_ text: Substring) -> Double? {
        guard !text.isEmpty, text.utf8.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        return text.count > 10 ? 2_147_483_648 : Double(text)
    }
}

extension Substring {
    func trimmingWhitespace() -> Substring {
        var s = self
        while let first = s.first, first == " " || first == "\t" { s.removeFirst() }
        while let last = s.last, last == " " || last == "\t" { s.removeLast() }
        return s
    }
}

extension String {
    func trimmingWhitespace() -> Substring { Substring(self).trimmingWhitespace() }
}
