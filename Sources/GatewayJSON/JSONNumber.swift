/// A JSON number: its `Double` value for arithmetic, and, when the document's text says more than the `Double` can
/// hold, that text.
///
/// `Double` has 53 bits of mantissa, so `9007199254740993` parses to `9007199254740992`; a claim copied into an
/// identity header from the `Double` would tell the upstream another number than the token holds. The parser
/// therefore keeps the literal as written (`source`) for every number it cannot prove exact — anything with a
/// fraction, an exponent, more than 15 digits, or `-0` — and `JSONWriter` writes that text back. Short integers,
/// the common case (`exp`, `iat`), keep no text, so parsing them allocates nothing.
///
/// Two numbers are equal when they denote the same decimal value (`1.0 == 1`, `1e2 == 100`), and
/// `9007199254740993 != 9007199254740992` although their `Double`s are equal.
public struct JSONNumber: Sendable, Hashable, CustomStringConvertible {
    /// The nearest `Double` (what NumericDate checks and arithmetic use).
    public let double: Double
    /// The literal as written in the parsed document; nil when `double` says it exactly.
    public let source: String?

    /// A number from a `Double` (for documents the gateway writes itself).
    public init(_ double: Double) {
        self.double = double
        self.source = nil
    }

    /// A parsed number. `source` must be a valid JSON number literal whose nearest `Double` is `double`.
    init(double: Double, source: String?) {
        self.double = double
        self.source = source
    }

    /// The number as JSON text: as written when parsed, else the shortest text for `double`.
    public var text: String { source ?? JSONWriter.formatNumber(double) }

    public var description: String { text }

    public static func == (lhs: JSONNumber, rhs: JSONNumber) -> Bool {
        guard lhs.double == rhs.double else { return false }
        if lhs.source == nil && rhs.source == nil { return true }
        switch (Decimal(lhs.text), Decimal(rhs.text)) {
        case (let l?, let r?): return l == r
        default: return lhs.text == rhs.text  // an exponent beyond `Int` (`1e-99999999999999999999`)
        }
    }

    /// Equal numbers have equal `Double`s (both are the nearest `Double` to the same value), so hashing the
    /// `Double` agrees with `==`.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(double)
    }

    /// A number literal's value as sign, significant digits (no leading or trailing zeros) and a power of ten, so
    /// that different spellings of one value compare equal. Zero has no digits and no sign.
    private struct Decimal: Equatable {
        var negative = false
        var digits: [UInt8] = []
        var exponent = 0

        init?(_ text: String) {
            var bytes = Array(text.utf8)[...]
            if bytes.first == UInt8(ascii: "-") {
                negative = true
                bytes = bytes.dropFirst()
            }
            var fractionDigits = 0
            var seenPoint = false
            while let byte = bytes.first, byte != UInt8(ascii: "e"), byte != UInt8(ascii: "E") {
                bytes = bytes.dropFirst()
                if byte == UInt8(ascii: ".") {
                    seenPoint = true
                    continue
                }
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                if digits.isEmpty && byte == UInt8(ascii: "0") {
                    if seenPoint { fractionDigits += 1 }
                    continue
                }
                digits.append(byte - UInt8(ascii: "0"))
                if seenPoint { fractionDigits += 1 }
            }
            var written = 0
            if !bytes.isEmpty {
                // `Int` reads an optional sign itself (`e+07`, `e-3`).
                guard let e = Int(String(decoding: bytes.dropFirst(), as: UTF8.self)) else { return nil }
                written = e
            }
            exponent = written - fractionDigits
            while digits.last == 0 {
                digits.removeLast()
                exponent += 1
            }
            if digits.isEmpty {
                negative = false
                exponent = 0
            }
        }
    }
}
