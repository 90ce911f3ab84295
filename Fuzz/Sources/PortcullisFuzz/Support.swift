import Glibc

/// One fuzz target: a thin entry that hands the input to the real code and checks the invariants that are cheap to
/// check. Inputs are bytes exactly as an attacker would send them (or as close as the entry point allows).
struct FuzzTarget: Sendable {
    let name: String
    let summary: String
    /// Built once before the first input (key tables, policies): never per input, or the rate drops tenfold.
    let setUp: @Sendable () -> Void
    let run: @Sendable (UnsafeRawBufferPointer) -> Void

    init(
        _ name: String, _ summary: String, setUp: @escaping @Sendable () -> Void = {},
        run: @escaping @Sendable (UnsafeRawBufferPointer) -> Void
    ) {
        self.name = name
        self.summary = summary
        self.setUp = setUp
        self.run = run
    }
}

enum FuzzTargets {
    static let all: [FuzzTarget] = [
        jsonTarget, jwsTarget, configTarget, pathTarget, bearerTarget, curlHeaderTarget, tokenBodyTarget,
        requestHeadTarget, keySetTarget, webSocketTarget, http2Target, chunkedTarget,
    ]
    /// Set once in main before libFuzzer starts, which calls back on this one thread only.
    nonisolated(unsafe) static var selected: FuzzTarget?
}

/// A broken invariant: print why and abort, so libFuzzer keeps the input as a crash and exits non-zero.
func require(_ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String) {
    guard !condition() else { return }
    printError("FUZZ INVARIANT FAILED: \(message())")
    abort()
}

/// Splits an input into a selector byte and the rest, so one target can drive several modes or parameters without
/// libFuzzer having to learn a structure.
struct FuzzInput {
    var bytes: UnsafeRawBufferPointer

    init(_ bytes: UnsafeRawBufferPointer) { self.bytes = bytes }

    /// Takes the first byte (0 when empty).
    mutating func takeByte() -> UInt8 {
        guard let first = bytes.first else { return 0 }
        bytes = UnsafeRawBufferPointer(rebasing: bytes[1...])
        return first
    }

    /// The rest split at every `separator` (empty parts kept).
    func parts(separator: UInt8) -> [ArraySlice<UInt8>] {
        Array(bytes).split(separator: separator, omittingEmptySubsequences: false)
    }

    var array: [UInt8] { Array(bytes) }
    /// The rest as a String the way NIO and curl callers build one (invalid UTF-8 repaired).
    var string: String { String(decoding: bytes, as: UTF8.self) }
}

extension String {
    var debugBytes: String { "\(self.debugDescription) (\(self.utf8.count) bytes)" }
}

/// To standard error with `write(2)`: the C `stderr` global is shared mutable state to Swift 6.
func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
