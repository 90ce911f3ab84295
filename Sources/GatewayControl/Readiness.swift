import GatewayJSON
import NIOConcurrencyHelpers

/// What `/readyz` reports: a set of named conditions, each registered not ready and turned ready by whoever owns it
/// (a remote key set after its first successful load; later the session store). The gateway is ready when every
/// condition is. Read by the admin listener and written by the control plane, never on the data path.
public final class Readiness: Sendable {
    private let conditions = NIOLockedValueBox<[(name: String, ready: Bool)]>([])
    /// Conditions that were met once and are failing now without making the gateway unready (DESIGN §9: the store
    /// is down, but the data path still serves). Reported, in order, as `"degraded"`.
    private let degradedNames = NIOLockedValueBox<[String]>([])

    public init() {}

    /// Adds a condition (not ready unless `ready`). Registering a name again keeps one entry.
    public func register(_ name: String, ready: Bool = false) {
        conditions.withLockedValue { list in
            if let i = list.firstIndex(where: { $0.name == name }) {
                list[i].ready = ready
            } else {
                list.append((name, ready))
            }
        }
    }

    public func unregister(_ name: String) {
        conditions.withLockedValue { list in list.removeAll { $0.name == name } }
        setDegraded(name, false)
    }

    /// Whether `name` is registered.
    public func contains(_ name: String) -> Bool {
        conditions.withLockedValue { list in list.contains { $0.name == name } }
    }

    /// Marks `name` degraded (or no longer); readiness itself is unchanged.
    public func setDegraded(_ name: String, _ degraded: Bool) {
        degradedNames.withLockedValue { list in
            if degraded {
                if !list.contains(name) { list.append(name) }
            } else {
                list.removeAll { $0 == name }
            }
        }
    }

    /// The conditions degraded now, in the order they became so.
    public var degraded: [String] { degradedNames.withLockedValue { $0 } }

    public func set(_ name: String, ready: Bool) {
        conditions.withLockedValue { list in
            if let i = list.firstIndex(where: { $0.name == name }) { list[i].ready = ready }
        }
    }

    /// The conditions not met yet, in registration order.
    public var notReady: [String] {
        conditions.withLockedValue { list in list.filter { !$0.ready }.map(\.name) }
    }

    public var isReady: Bool { notReady.isEmpty }

    /// `{"status":"ready"}` or `{"status":"not_ready","not_ready":[names]}`, plus `"degraded":[names]` when any.
    public func body() -> (ready: Bool, json: [UInt8]) {
        let pending = notReady
        let degraded = self.degraded
        if pending.isEmpty && degraded.isEmpty { return (true, Array(#"{"status":"ready"}"#.utf8)) }
        var object = JSONObject([("status", .string(pending.isEmpty ? "ready" : "not_ready"))])
        if !pending.isEmpty { object["not_ready"] = .array(pending.map(JSONValue.string)) }
        if !degraded.isEmpty { object["degraded"] = .array(degraded.map(JSONValue.string)) }
        return (pending.isEmpty, Array(JSONWriter.string(.object(object)).utf8))
    }
}
