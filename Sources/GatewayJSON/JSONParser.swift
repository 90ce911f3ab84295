/// Limits applied while parsing, so that hostile input costs bounded time and memory.
public struct JSONLimits: Sendable, Hashable {
    /// Maximum nesting of arrays and objects (the top-level value is depth 1).
    public var maxDepth: Int
    /// Maximum size of the document in bytes.
    public var maxBytes: Int

    public init(maxDepth: Int = 32, maxBytes: Int = 1 << 20) {
        self.maxDepth = maxDepth
        self.maxBytes = maxBytes
    }

    /// The RFC 8725-minded limits used for JOSE headers and JWT claim sets.
    public static let token = JSONLimits(maxDepth: 32, maxBytes: 8192)
    /// Limits for configuration files and key sets.
    public static let document = JSONLimits(maxDepth: 64, maxBytes: 4 << 20)
}

/// A strict RFC 8259 parser: no BOM, no comments, no trailing commas, no duplicate member names, no lone
/// surrogates, well-formed UTF-8 only, and bounded depth and size. Anything else is an error that names the
/// JSON path where it happened.
public struct JSONParser {
    private let bytes: UnsafeRawBufferPointer
    private var index: Int = 0
    private var depth: Int = 0
    private let limits: JSONLimits
    private var path: [JSONPathComponent] = []

    private init(bytes: UnsafeRawBufferPointer, limits: JSONLimits) {
        self.bytes = bytes
        self.limits = limits
    }

    /// Parses one JSON document.
    public static func parse(_ bytes: UnsafeRawBufferPointer, limits: JSONLimits = .document) throws(JSONError) -> JSONValue {
        guard bytes.count <= limits.maxBytes else {
            throw JSONError(code: .tooLarge, message: "document larger than \(limits.maxBytes) bytes", offset: 0, path: [])
        }
        if bytes.count >= 3, bytes[0] == 0xEF, bytes[1] == 0xBB, bytes[2] == 0xBF {
            throw JSONError(code: .syntax, message: "byte order mark is not allowed", offset: 0, path: [])
        }
        var parser = JSONParser(bytes: bytes, limits: limits)
        parser.skipWhitespace()
        let value = try parser.parseValue()
        parser.skipWhitespace()
        guard parser.index == bytes.count else { throw parser.error(.syntax, "unexpected data after the JSON value") }
        return value
    }

    public static func parse(_ bytes: some Collection<UInt8>, limits: JSONLimits = .document) throws(JSONError) -> JSONValue {
        let array = Array(bytes)
        do {
            return try array.withUnsafeBytes { buffer throws(JSONError) in try parse(buffer, limits: limits) }
        } catch let error as JSONError {
            throw error
        } catch {
            fatalError("unreachable: \(error)")
        }
    }

    public static func parse(_ string: String, limits: JSONLimits = .document) throws(JSONError) -> JSONValue {
        try parse(Array(string.utf8), limits: limits)
    }

    // MARK: - Grammar

    private mutating func parseValue() throws(JSONError) -> JSONValue {
        guard index < bytes.count else { throw error(.syntax, "unexpected end of input") }
        switch bytes[index] {
        case UInt8(ascii: "{"): return try parseObject()
        case UInt8(ascii: "["): return try parseArray()
        case UInt8(ascii: "\""): return .string(try parseString())
        case UInt8(ascii: "t"):
            try expectLiteral("true")
            return .bool(true)
        case UInt8(ascii: "f"):
            try expectLiteral("false")
            return .bool(false)
        case UInt8(ascii: "n"):
            try expectLiteral("null")
            return .null
        case UInt8(ascii: "-"), UInt8(ascii: "0")...UInt8(ascii: "9"): return .number(try parseNumber())
        default: throw error(.syntax, "unexpected character")
        }
    }

    private mutating func enter() throws(JSONError) {
        depth += 1
        if depth > limits.maxDepth { throw error(.tooDeep, "nesting deeper than \(limits.maxDepth)") }
    }

    private mutating func parseObject() throws(JSONError) -> JSONValue {
        try enter()
        index += 1
        var members: [(name: String, value: JSONValue)] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "}") {
            index += 1
            depth -= 1
            return .object(JSONObject(uncheckedMembers: members))
        }
        var seen: Set<String>? = nil
        while true {
            skipWhitespace()
            guard peek() == UInt8(ascii: "\"") else { throw error(.syntax, "expected a member name") }
            let name = try parseString()
            // Duplicate names are where two parsers disagree (first wins vs last wins): refuse them.
            let duplicate: Bool
            if members.count < 16 {
                duplicate = members.contains { $0.name == name }
            } else {
                if seen == nil { seen = Set(members.map(\.name)) }
                duplicate = !seen!.insert(name).inserted
            }
            if duplicate {
                path.append(.key(name))
                throw error(.duplicateKey, "duplicate member \"\(name)\"")
            }
            skipWhitespace()
            guard peek() == UInt8(ascii: ":") else { throw error(.syntax, "expected ':'") }
            index += 1
            skipWhitespace()
            path.append(.key(name))
            let value = try parseValue()
            path.removeLast()
            members.append((name, value))
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "}"):
                index += 1
                depth -= 1
                return .object(JSONObject(uncheckedMembers: members))
            default: throw error(.syntax, "expected ',' or '}'")
            }
        }
    }

    private mutating func parseArray() throws(JSONError) -> JSONValue {
        try enter()
        index += 1
        var elements: [JSONValue] = []
        skipWhitespace()
        if peek() == UInt8(ascii: "]") {
            index += 1
            depth -= 1
            return .array(elements)
        }
        while true {
            skipWhitespace()
            path.append(.index(elements.count))
            elements.append(try parseValue())
            path.removeLast()
            skipWhitespace()
            switch peek() {
            case UInt8(ascii: ","): index += 1
            case UInt8(ascii: "]"):
                index += 1
                depth -= 1
                return .array(elements)
            default: throw error(.syntax, "expected ',' or ']'")
            }
        }
    }

    private mutating func parseString() throws(JSONError) -> String {
        index += 1  // opening quote
        let start = index
        // Fast path: no escapes.
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\"") {
                let slice = UnsafeRawBufferPointer(rebasing: bytes[start..<index])
                index += 1
                guard let string = String(validating: slice, as: UTF8.self) else {
                    throw error(.invalidUTF8, "string is not valid UTF-8")
                }
                return string
            }
            if byte == UInt8(ascii: "\\") { break }
            if byte < 0x20 { throw error(.syntax, "control character in string") }
            index += 1
        }
        var buffer = [UInt8](UnsafeRawBufferPointer(rebasing: bytes[start..<index]))
        while index < bytes.count {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                index += 1
                guard let string = String(validating: buffer, as: UTF8.self) else {
                    throw error(.invalidUTF8, "string is not valid UTF-8")
                }
                return string
            case UInt8(ascii: "\\"):
                index += 1
                guard index < bytes.count else { break }
                let escape = bytes[index]
                index += 1
                switch escape {
                case UInt8(ascii: "\""): buffer.append(0x22)
                case UInt8(ascii: "\\"): buffer.append(0x5C)
                case UInt8(ascii: "/"): buffer.append(0x2F)
                case UInt8(ascii: "b"): buffer.append(0x08)
                case UInt8(ascii: "f"): buffer.append(0x0C)
                case UInt8(ascii: "n"): buffer.append(0x0A)
                case UInt8(ascii: "r"): buffer.append(0x0D)
                case UInt8(ascii: "t"): buffer.append(0x09)
                case UInt8(ascii: "u"):
                    var scalar = try parseHex4()
                    if (0xD800...0xDBFF).contains(scalar) {
                        guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                            throw error(.syntax, "lone surrogate in string")
                        }
                        index += 2
                        let low = try parseHex4()
                        guard (0xDC00...0xDFFF).contains(low) else { throw error(.syntax, "lone surrogate in string") }
                        scalar = 0x10000 + ((scalar - 0xD800) << 10) + (low - 0xDC00)
                    } else if (0xDC00...0xDFFF).contains(scalar) {
                        throw error(.syntax, "lone surrogate in string")
                    }
                    buffer.append(contentsOf: String(Character(Unicode.Scalar(scalar)!)).utf8)
                default:
                    throw error(.syntax, "invalid escape in string")
                }
            default:
                if byte < 0x20 { throw error(.syntax, "control character in string") }
                buffer.append(byte)
                index += 1
            }
        }
        throw error(.syntax, "unterminated string")
    }

    private mutating func parseHex4() throws(JSONError) -> UInt32 {
        guard index + 4 <= bytes.count else { throw error(.syntax, "truncated \\u escape") }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: throw error(.syntax, "invalid \\u escape")
            }
            value = value << 4 | UInt32(digit)
            index += 1
        }
        return value
    }

    /// Short integers take a fast path and keep no text; every other number keeps its literal (`JSONNumber`).
    private mutating func parseNumber() throws(JSONError) -> JSONNumber {
        let start = index
        var negative = false
        if peek() == UInt8(ascii: "-") {
            negative = true
            index += 1
        }
        guard let first = peek(), isDigit(first) else { throw error(.syntax, "invalid number") }
        var integer: UInt64 = 0
        var digits = 0
        if first == UInt8(ascii: "0") {
            index += 1
            if let next = peek(), isDigit(next) { throw error(.syntax, "leading zero in number") }
        } else {
            while let byte = peek(), isDigit(byte) {
                if digits < 18 { integer = integer * 10 + UInt64(byte - UInt8(ascii: "0")) }
                digits += 1
                index += 1
            }
        }
        // `-0` keeps its text: its `Double` would be written back as `0`.
        var simple = digits <= 15 && !(negative && digits == 0)
        if peek() == UInt8(ascii: ".") {
            simple = false
            index += 1
            guard let byte = peek(), isDigit(byte) else { throw error(.syntax, "invalid number") }
            while let byte = peek(), isDigit(byte) { index += 1 }
        }
        if let e = peek(), e == UInt8(ascii: "e") || e == UInt8(ascii: "E") {
            simple = false
            index += 1
            if let sign = peek(), sign == UInt8(ascii: "+") || sign == UInt8(ascii: "-") { index += 1 }
            guard let byte = peek(), isDigit(byte) else { throw error(.syntax, "invalid number") }
            while let byte = peek(), isDigit(byte) { index += 1 }
        }
        if simple {
            let value = Double(integer)
            return JSONNumber(negative ? -value : value)
        }
        let text = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
        guard let value = Double(text), value.isFinite else { throw error(.syntax, "number out of range") }
        return JSONNumber(double: value, source: text)
    }

    private mutating func expectLiteral(_ literal: StaticString) throws(JSONError) {
        let count = literal.utf8CodeUnitCount
        guard index + count <= bytes.count else { throw error(.syntax, "unexpected end of input") }
        let matches = literal.withUTF8Buffer { literalBytes in
            for i in 0..<count where bytes[index + i] != literalBytes[i] { return false }
            return true
        }
        guard matches else { throw error(.syntax, "unexpected character") }
        index += count
    }

    // MARK: - Helpers

    @inline(__always)
    private func peek() -> UInt8? {
        index < bytes.count ? bytes[index] : nil
    }

    @inline(__always)
    private func isDigit(_ byte: UInt8) -> Bool {
        byte >= UInt8(ascii: "0") && byte <= UInt8(ascii: "9")
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }

    private func error(_ code: JSONError.Code, _ message: String) -> JSONError {
        JSONError(code: code, message: message, offset: index, path: path)
    }
}
