#if canImport(Glibc)
    import Glibc
#endif

/// The wall clock the control plane stamps revocations and issued tokens with. In this low module so that the key
/// sets, the token service and the assembly read one clock.
package enum WallClock {
    /// Seconds since the epoch, with sub-second precision (vDSO, no syscall).
    @Sendable package static func now() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }
}
