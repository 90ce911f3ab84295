// The proof behind the first entry of scripts/tsan-suppressions.txt: TSan reports a race between
// UnsafeContinuation.resume and the code after the await in a program that shares no memory of its own.
//
//   swiftc -swift-version 6 -sanitize=thread -g scripts/tsan-continuation-check.swift -o /tmp/tsan-continuation-check
//   TSAN_OPTIONS=suppress_equal_addresses=0 /tmp/tsan-continuation-check        # reports; exit 66, sum right
//   TSAN_OPTIONS=suppressions=$PWD/scripts/tsan-suppressions.txt /tmp/tsan-continuation-check       # clean
//   TSAN_OPTIONS=suppressions=$PWD/scripts/tsan-suppressions.txt /tmp/tsan-continuation-check race  # real race: reported
//
// Each closure hands the resume to another thread and spins (relaxed loads: no happens-before edge for TSan) until
// that resume has returned, so the await always finds the continuation already resumed and goes on inline, the
// path on which the runtime makes no _swift_tsan_acquire.
import Dispatch
import Synchronization

let resumed = Atomic<Int>(0)
nonisolated(unsafe) var shared = 0
let addRealRace = CommandLine.arguments.dropFirst().first == "race"

func resumeElsewhere(_ i: Int, _ resume: @escaping @Sendable () -> Void) {
    DispatchQueue.global().async {
        if addRealRace { shared += 1 }
        resume()
        resumed.store(i, ordering: .relaxed)
    }
    if addRealRace { shared += 1 }
    while resumed.load(ordering: .relaxed) != i {}
}

var sum = 0
for i in 1...400 {
    switch i % 4 {
    case 0:
        sum += try! await withUnsafeThrowingContinuation { (c: UnsafeContinuation<Int, any Error>) in
            resumeElsewhere(i) { c.resume(returning: i) }
        }
    case 1:
        sum += await withUnsafeContinuation { (c: UnsafeContinuation<Int, Never>) in
            resumeElsewhere(i) { c.resume(returning: i) }
        }
    case 2:
        sum += try! await withCheckedThrowingContinuation { (c: CheckedContinuation<Int, any Error>) in
            resumeElsewhere(i) { c.resume(returning: i) }
        }
    default:
        sum += await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
            resumeElsewhere(i) { c.resume(returning: i) }
        }
    }
}
print("sum \(sum), expected \(400 * 401 / 2)")
