import GatewayJSON
import Synchronization

/// What `/readyz` reports: a set of named conditions, each registered not ready and turned ready by whoever owns it
/// (a remote key set after its first successful load; later the session store). The gateway is ready when every
/// condition is. Read by the admin listener and written by the control plane, never on the data path.
public final class Readiness: Sendable {
    private let conditions = Mutex<[(name: String, ready: Bool)]>([])

    public init() {}

    /// Adds a condition (not ready unless `ready`). Registering a name again keeps one entry.
    public func register(_ name: String, ready: Bool = false) {
        conditions.withLock { list in
            if let i = list.firstIndex(where: { $0.name == name }) {
                list[i].ready = ready
            } else {
                list.append((name, ready))
            }
        }
    }

    public func unregister(_ name: String) {
        conditions.withLock { list in list.removeAll { $0.name == name } }
    }

    public func set(_ name: String, ready: Bool) {
        conditions.withLock { list in
            if let i = list.firstIndex(where: { $0.name == name }) { list[i].ready = ready }
        }
    }

    /// The conditions not met yet, in registration order.
    public var notReady: [String] {
        conditions.withLock { list in list.filter { !$0.ready }.map(\.name) }
    }

    public var isReady: Bool { notReady.isEmpty }

    /// `{"status":"ready"}` or `{"status":"not_ready","not_ready":[names]}`.
    public func body() -> (ready: Bool, json: [UInt8]) {
        let pending = notReady
        if pending.isEmpty { return (true, Array(#"{"status":"ready"}"#.utf8)) }
        let object = JSONObject([("status", .string("not_ready")), ("not_ready", .array(pending.map(JSONValue.string)))])
        return (false, Array(JSONWriter.string(.object(object)).utf8))
    }
}
