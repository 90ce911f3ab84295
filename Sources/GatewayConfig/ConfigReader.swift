import GatewayJSON

/// Reads one JSON object of the configuration: typed getters that record an error (with the JSON path) instead of
/// throwing, so one run of `portcullis check` reports every problem, and a final `finish()` that reports the keys
/// nobody asked for — unknown keys are errors, because a misspelt security setting must not silently default.
struct ConfigReader {
    let object: JSONObject
    let path: [JSONPathComponent]
    private var consumed: Set<String> = []
    let sink: ErrorSink

    init(_ object: JSONObject, path: [JSONPathComponent], sink: ErrorSink) {
        self.object = object
        self.path = path
        self.sink = sink
    }

    /// Opens the value at `path` as an object, recording an error if it is something else.
    static func open(_ value: JSONValue, path: [JSONPathComponent], sink: ErrorSink) -> ConfigReader? {
        guard case .object(let object) = value else {
            sink.record(.wrongType, path, "expected an object, found \(value.typeName)")
            return nil
        }
        return ConfigReader(object, path: path, sink: sink)
    }

    func childPath(_ key: String) -> [JSONPathComponent] { path + [.key(key)] }

    mutating func raw(_ key: String) -> JSONValue? {
        consumed.insert(key)
        guard let value = object[key] else { return nil }
        if case .null = value { return nil }
        return value
    }

    mutating func string(_ key: String) -> String? {
        guard let value = raw(key) else { return nil }
        guard case .string(let s) = value else {
            sink.record(.wrongType, childPath(key), "expected a string, found \(value.typeName)")
            return nil
        }
        return s
    }

    mutating func requiredString(_ key: String) -> String? {
        guard let s = string(key) else {
            if object[key] == nil || object[key] == .null { sink.record(.missingKey, childPath(key), "is required") }
            return nil
        }
        return s
    }

    mutating func bool(_ key: String, default defaultValue: Bool) -> Bool {
        guard let value = raw(key) else { return defaultValue }
        guard case .bool(let b) = value else {
            sink.record(.wrongType, childPath(key), "expected true or false, found \(value.typeName)")
            return defaultValue
        }
        return b
    }

    mutating func integer(_ key: String, default defaultValue: Int, range: ClosedRange<Int>) -> Int {
        guard let value = raw(key) else { return defaultValue }
        guard let n = value.numberValue, n == n.rounded(), n >= -9e15, n <= 9e15 else {
            sink.record(
                .wrongType, childPath(key), "expected an integer, found \(value.typeName == "a number" ? "a fraction" : value.typeName)")
            return defaultValue
        }
        let i = Int(n)
        guard range.contains(i) else {
            sink.record(.invalidValue, childPath(key), "must be between \(range.lowerBound) and \(range.upperBound), found \(i)")
            return defaultValue
        }
        return i
    }

    mutating func stringArray(_ key: String) -> [String]? {
        guard let value = raw(key) else { return nil }
        guard case .array(let elements) = value else {
            sink.record(.wrongType, childPath(key), "expected an array of strings, found \(value.typeName)")
            return nil
        }
        var result: [String] = []
        for (i, element) in elements.enumerated() {
            guard case .string(let s) = element else {
                sink.record(.wrongType, childPath(key) + [.index(i)], "expected a string, found \(element.typeName)")
                continue
            }
            result.append(s)
        }
        return result
    }

    mutating func child(_ key: String) -> ConfigReader? {
        guard let value = raw(key) else { return nil }
        return ConfigReader.open(value, path: childPath(key), sink: sink)
    }

    mutating func array(_ key: String) -> [JSONValue]? {
        guard let value = raw(key) else { return nil }
        guard case .array(let elements) = value else {
            sink.record(.wrongType, childPath(key), "expected an array, found \(value.typeName)")
            return nil
        }
        return elements
    }

    mutating func oneOf(_ key: String, _ allowed: [String], default defaultValue: String) -> String {
        guard let s = string(key) else { return defaultValue }
        guard allowed.contains(s) else {
            sink.record(
                .invalidValue, childPath(key),
                "must be one of \(allowed.map { "\"\($0)\"" }.joined(separator: ", ")), found \(JSONWriter.quoted(s))")
            return defaultValue
        }
        return s
    }

    func record(_ code: ConfigError.Code, _ key: String?, _ message: String) {
        sink.record(code, key.map(childPath) ?? path, message)
    }

    /// Reports every key that was never read.
    func finish() {
        for name in object.keys where !consumed.contains(name) {
            sink.record(.unknownKey, childPath(name), "unknown key")
        }
    }
}

/// Collects errors while the configuration is decoded. A reference type so that nested readers share it; decoding
/// is single-threaded.
final class ErrorSink {
    private(set) var errors: [ConfigError] = []

    func record(_ code: ConfigError.Code, _ path: [JSONPathComponent], _ message: String) {
        errors.append(ConfigError(code, path: path.jsonPathString, message))
    }
}
