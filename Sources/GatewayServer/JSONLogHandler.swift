import GatewayJSON
import GatewayProxy
import Logging

/// A swift-log handler writing one JSON object per line to standard error (through `LogOutput`'s queue and writer
/// thread): `ts`, `level`, `msg`, then metadata. Every string goes through `JSONWriter`, so control characters in a
/// message or a value are escaped and can never start a forged log line.
public struct JSONLogHandler: LogHandler {
    public var metadata: Logger.Metadata = [:]
    public var logLevel: Logger.Level
    private let label: String
    private let output: LogOutput

    public init(label: String, level: Logger.Level, output: LogOutput = .standardError) {
        self.label = label
        self.logLevel = level
        self.output = output
    }

    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    public func log(event: LogEvent) {
        var object = JSONObject()
        object["ts"] = .string(LogTimestamp.now())
        object["level"] = .string(event.level.rawValue)
        object["logger"] = .string(label)
        object["msg"] = .string(event.message.description)
        let merged = event.metadata.map { self.metadata.merging($0) { $1 } } ?? self.metadata
        for (key, value) in merged.sorted(by: { $0.key < $1.key }) where object[key] == nil {
            object[key] = Self.json(value)
        }
        var line: [UInt8] = []
        line.reserveCapacity(160)
        JSONWriter.append(.object(object), to: &line)
        line.append(UInt8(ascii: "\n"))
        // Queued, never written here: this runs on event loops too, and a stalled log pipe must not stall them.
        output.enqueue(line)
    }

    static func json(_ value: Logger.Metadata.Value) -> JSONValue {
        switch value {
        case .string(let s): .string(s)
        case .stringConvertible(let c): .string(c.description)
        case .array(let a): .array(a.map(json))
        case .dictionary(let d): .object(JSONObject(d.sorted { $0.key < $1.key }.map { ($0.key, json($0.value)) }))
        }
    }
}
