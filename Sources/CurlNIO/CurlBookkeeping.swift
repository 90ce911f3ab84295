import NIOCore

// Pure bookkeeping for the driver: no I/O, no curl calls. Each type returns the actions the driver must perform,
// which keeps the tricky rules (ONESHOT re-arm, stale fds, pause suppression, timer coalescing) unit-testable.

/// `epoll_event.data.u64` layout: driver index (16 bits) | generation (16 bits) | fd (32 bits).
struct CurlSocketTag: Hashable {
    var driverIndex: UInt16
    var generation: UInt16
    var fd: Int32

    /// Reserved for the watcher's own eventfd; driver index 0xFFFF is never handed out.
    static let wakeUpRawValue: UInt64 = .max
    static let maxDriverIndex: UInt16 = 0xFFFE

    init(driverIndex: UInt16, generation: UInt16, fd: Int32) {
        self.driverIndex = driverIndex
        self.generation = generation
        self.fd = fd
    }

    init(rawValue: UInt64) {
        self.driverIndex = UInt16(truncatingIfNeeded: rawValue >> 48)
        self.generation = UInt16(truncatingIfNeeded: rawValue >> 32)
        self.fd = Int32(bitPattern: UInt32(truncatingIfNeeded: rawValue))
    }

    var rawValue: UInt64 {
        UInt64(self.driverIndex) << 48 | UInt64(self.generation) << 32 | UInt64(UInt32(bitPattern: self.fd))
    }
}

/// What curl wants to know about a socket.
struct CurlSocketInterest: OptionSet, Hashable {
    var rawValue: UInt8
    static let read = CurlSocketInterest(rawValue: 1)
    static let write = CurlSocketInterest(rawValue: 2)

    /// From CURL_POLL_NONE/IN/OUT/INOUT (0…3).
    init(curlWhat: Int32) {
        self.rawValue = UInt8(truncatingIfNeeded: curlWhat & 3)
    }

    init(rawValue: UInt8) {
        self.rawValue = rawValue
    }
}

/// The driver's view of curl's sockets. Every registration is level-triggered EPOLLONESHOT: after an event the
/// watcher will not report the fd again until it is re-armed (`modify`).
struct CurlSocketTable {
    static let curlPollRemove: Int32 = 4

    struct Entry: Equatable {
        var generation: UInt16
        var interest: CurlSocketInterest
        /// A ONESHOT registration is pending in epoll (not yet reported).
        var armed: Bool
        /// Not re-armed because its only transfer is receive-paused (curl#6356); re-armed on resume.
        var suppressed: Bool
        /// Id of the transfer curl last named for this socket (0: none, e.g. a cached connection curl watches or
        /// closes on its own). Only ever looked up among live transfers, never dereferenced.
        var owner: UInt
    }

    enum Action: Equatable {
        case none
        case add(fd: Int32, tag: UInt64, interest: CurlSocketInterest)
        case modify(fd: Int32, tag: UInt64, interest: CurlSocketInterest)
        case delete(fd: Int32)
    }

    let driverIndex: UInt16
    private(set) var entries: [Int32: Entry] = [:]
    private var nextGeneration: UInt16 = 1

    init(driverIndex: UInt16) {
        self.driverIndex = driverIndex
    }

    private func tag(_ fd: Int32, _ generation: UInt16) -> UInt64 {
        CurlSocketTag(driverIndex: self.driverIndex, generation: generation, fd: fd).rawValue
    }

    /// The owner to record for a socket curl names with a transfer: the transfer's id, except for a transfer that
    /// may multiplex (HTTP/2 out). Such a socket may carry other transfers' streams, and a receive-paused owner's
    /// socket is not re-armed (curl spins on it otherwise), which would stall every other stream of the connection;
    /// curl pauses an HTTP/2 stream by flow control instead and keeps reading the connection for the others.
    static func owner(transferID: UInt, mayMultiplex: Bool) -> UInt {
        mayMultiplex ? 0 : transferID
    }

    /// CURLMOPT_SOCKETFUNCTION.
    mutating func socketCallback(fd: Int32, what: Int32, owner: UInt) -> Action {
        if what == Self.curlPollRemove {
            return self.entries.removeValue(forKey: fd) == nil ? .none : .delete(fd: fd)
        }
        let interest = CurlSocketInterest(curlWhat: what)
        if var entry = self.entries[fd] {
            entry.interest = interest
            entry.armed = true
            entry.suppressed = false
            // Whoever curl names now owns it, also "nobody": keeping an earlier owner would let a finished
            // transfer's id outlive it here.
            entry.owner = owner
            self.entries[fd] = entry
            return .modify(fd: fd, tag: self.tag(fd, entry.generation), interest: interest)
        }
        let generation = self.nextGeneration
        self.nextGeneration &+= 1
        self.entries[fd] = Entry(generation: generation, interest: interest, armed: true, suppressed: false, owner: owner)
        return .add(fd: fd, tag: self.tag(fd, generation), interest: interest)
    }

    /// The watcher reported `tag`. Returns the fd if it is current (not stale), marking it disarmed.
    mutating func readiness(tag raw: UInt64) -> Int32? {
        let tag = CurlSocketTag(rawValue: raw)
        guard tag.driverIndex == self.driverIndex, var entry = self.entries[tag.fd],
            entry.generation == tag.generation
        else { return nil }
        entry.armed = false
        self.entries[tag.fd] = entry
        return tag.fd
    }

    /// After `curl_multi_socket_action` for a reported fd: re-arm it unless curl already did (through the socket
    /// callback), curl removed it, or its owner is receive-paused and it is only wanted for reading.
    mutating func afterAction(fd: Int32, generation: UInt16, isReceivePaused: (UInt) -> Bool) -> Action {
        guard var entry = self.entries[fd], entry.generation == generation, !entry.armed else { return .none }
        if entry.interest == .read, entry.owner != 0, isReceivePaused(entry.owner) {
            entry.suppressed = true
            self.entries[fd] = entry
            return .none
        }
        entry.armed = true
        entry.suppressed = false
        self.entries[fd] = entry
        return .modify(fd: fd, tag: self.tag(fd, generation), interest: entry.interest)
    }

    /// The owner resumed receiving: re-arm its socket if we suppressed it.
    mutating func ownerResumed(fd: Int32, owner: UInt) -> Action {
        guard var entry = self.entries[fd], entry.owner == owner, entry.suppressed, !entry.armed else { return .none }
        entry.armed = true
        entry.suppressed = false
        self.entries[fd] = entry
        return .modify(fd: fd, tag: self.tag(fd, entry.generation), interest: entry.interest)
    }

    /// The owner finished; the socket (a cached keep-alive connection) no longer belongs to it.
    mutating func clearOwner(fd: Int32, owner: UInt) -> Action {
        guard var entry = self.entries[fd], entry.owner == owner else { return .none }
        entry.owner = 0
        if entry.suppressed && !entry.armed {
            entry.suppressed = false
            entry.armed = true
            self.entries[fd] = entry
            return .modify(fd: fd, tag: self.tag(fd, entry.generation), interest: entry.interest)
        }
        self.entries[fd] = entry
        return .none
    }

    /// Forget everything (driver shutdown); returns the deletes to perform.
    mutating func removeAll() -> [Action] {
        let fds = self.entries.keys.sorted()
        self.entries.removeAll()
        return fds.map { .delete(fd: $0) }
    }
}

/// Both pause directions, always applied together: `curl_easy_pause` sets the whole state, so un-pausing one
/// direction must re-state the other.
struct CurlPauseState: OptionSet, Hashable {
    var rawValue: UInt8
    static let receive = CurlPauseState(rawValue: 1)
    static let send = CurlPauseState(rawValue: 2)

    init(rawValue: UInt8) {
        self.rawValue = rawValue
    }

    /// The `bitmask` argument for `curl_easy_pause` (CURLPAUSE_RECV = 1, CURLPAUSE_SEND = 4, *_CONT = 0).
    var curlBitmask: Int32 {
        (self.contains(.receive) ? 1 : 0) | (self.contains(.send) ? 4 : 0)
    }
}

/// CURLMOPT_TIMERFUNCTION decisions: one `Scheduled` at most, replaced only by an earlier deadline; 0 runs
/// "soon" (via `execute`, never re-entrantly) and is coalesced; -1 cancels.
struct CurlTimerState {
    enum Action: Equatable {
        case none
        /// Cancel the scheduled task.
        case cancel
        /// `eventLoop.execute { socket_action(TIMEOUT) }`.
        case runSoon
        /// Cancel any scheduled task and schedule one at this deadline.
        case schedule(NIODeadline)
    }

    private(set) var scheduledDeadline: NIODeadline?
    private(set) var immediatePending = false

    mutating func curlTimer(milliseconds ms: Int, now: NIODeadline) -> Action {
        if ms < 0 {
            guard self.scheduledDeadline != nil else { return .none }
            self.scheduledDeadline = nil
            return .cancel
        }
        if ms == 0 {
            guard !self.immediatePending else { return .none }
            self.immediatePending = true
            return .runSoon
        }
        let deadline = now + .milliseconds(Int64(ms))
        if let existing = self.scheduledDeadline, existing <= deadline {
            // The earlier task fires first; the driver re-reads curl_multi_timeout then.
            return .none
        }
        self.scheduledDeadline = deadline
        return .schedule(deadline)
    }

    mutating func scheduledFired() {
        self.scheduledDeadline = nil
    }

    mutating func immediateRan() {
        self.immediatePending = false
    }
}
