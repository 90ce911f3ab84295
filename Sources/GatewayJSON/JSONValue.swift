/// A parsed JSON value. Objects keep their members in document order, which the strict parser has already
/// checked for duplicates, so lookups never have to decide which of two equal names wins.
public enum JSONValue: Sendable, Hashable {
    case null
    case bool(Bool)
    /// A number, with its text as written when the `Double` cannot say it exactly (see `JSONNumber`).
    case number(JSONNumber)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)

    /// A short name for the value's JSON type, for error messages ("expected a string, found a number").
    public var typeName: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// A number from a `Double`, for documents the gateway writes itself (`.number(expiry)`).
    public static func number(_ value: Double) -> JSONValue {
        .number(JSONNumber(value))
    }

    /// The number's nearest `Double` (exact up to 2^53; NumericDates and limits are read this way).
    public var numberValue: Double? {
        if case .number(let n) = self { return n.double }
        return nil
    }

    /// The number with its text as written, for copying it elsewhere without rounding (identity headers).
    public var jsonNumber: JSONNumber? {
        if case .number(let n) = self { return n }
        return nil
    }

    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    public subscript(key: String) -> JSONValue? {
        objectValue?[key]
    }
}

/// A JSON object: members in document order, names unique.
public struct JSONObject: Sendable, Hashable, Sequence {
    public private(set) var members: [(name: String, value: JSONValue)]

    public init() { self.members = [] }

    /// Builds an object from members whose names the caller guarantees unique (later duplicates replace earlier ones).
    public init(_ members: [(String, JSONValue)]) {
        self.members = []
        self.members.reserveCapacity(members.count)
        for (name, value) in members { self[name] = value }
    }

    init(uncheckedMembers: [(name: String, value: JSONValue)]) {
        self.members = uncheckedMembers
    }

    public var count: Int { members.count }
    public var isEmpty: Bool { members.isEmpty }
    public var keys: [String] { members.map(\.name) }

    public subscript(name: String) -> JSONValue? {
        get {
            for member in members where member.name == name { return member.value }
            return nil
        }
        set {
            if let index = members.firstIndex(where: { $0.name == name }) {
                if let newValue { members[index].value = newValue } else { members.remove(at: index) }
            } else if let newValue {
                members.append((name, newValue))
            }
        }
    }

    public func makeIterator() -> IndexingIterator<[(name: String, value: JSONValue)]> {
        members.makeIterator()
    }

    public static func == (lhs: JSONObject, rhs: JSONObject) -> Bool {
        guard lhs.members.count == rhs.members.count else { return false }
        for (l, r) in zip(lhs.members, rhs.members) where l.name != r.name || l.value != r.value { return false }
        return true
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(members.count)
        for member in members {
            hasher.combine(member.name)
            hasher.combine(member.value)
        }
    }
}
