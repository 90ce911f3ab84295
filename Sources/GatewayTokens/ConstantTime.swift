/// Comparisons of secrets (bearer secrets, password hashes) whose running time says nothing about how much of a
/// guess was right.
public enum ConstantTime {
    /// Whether `presented` equals `expected`, in time that depends only on `expected`'s length: never on where the
    /// first difference is, nor on the presented length (a length mismatch is folded into the same loop).
    public static func equals(_ presented: some Collection<UInt8>, _ expected: [UInt8]) -> Bool {
        var difference = UInt64(truncatingIfNeeded: presented.count ^ expected.count)
        var bytes = presented.makeIterator()
        for byte in expected { difference |= UInt64((bytes.next() ?? 0) ^ byte) }
        return difference == 0
    }
}
