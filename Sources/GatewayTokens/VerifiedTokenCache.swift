#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Verified-token cache: whole token bytes → `VerifiedToken`, valid while `now < exp + leeway`. One per event loop:
/// not Sendable, no locks. Bounded by `capacity` (0 disables it) with CLOCK (second-chance) eviction, O(1) per
/// operation. A lookup hashes the token (SipHash, randomly seeded per process), then compares the full stored bytes:
/// a hash collision can never return another token's claims. Hits do not allocate.
public final class VerifiedTokenCache {
    public let capacity: Int
    public let leeway: Double

    private let hashFunction: (UnsafeRawBufferPointer) -> Int
    /// hash → slot
    private var index: [Int: Int] = [:]
    // Parallel slot arrays, grown up to `capacity`.
    private var tokens: [[UInt8]] = []
    private var values: [VerifiedToken?] = []
    private var expiries: [Double] = []
    private var hashes: [Int] = []
    private var referenced: [Bool] = []
    private var occupied: [Bool] = []
    private var freeSlots: [Int] = []
    private var hand = 0

    /// `leeway` must match the verifier's (an entry lives until `exp + leeway`, as the verifier would accept it).
    public convenience init(capacity: Int, leeway: Double = 30) {
        self.init(capacity: capacity, leeway: leeway, hashFunction: VerifiedTokenCache.sipHash)
    }

    /// Tests inject a weak hash function to force collisions.
    init(capacity: Int, leeway: Double, hashFunction: @escaping (UnsafeRawBufferPointer) -> Int) {
        self.capacity = max(0, capacity)
        self.leeway = leeway.isFinite && leeway >= 0 ? leeway : 0
        self.hashFunction = hashFunction
        let reserve = min(self.capacity, 1 << 16)
        index.reserveCapacity(reserve)
    }

    static func sipHash(_ bytes: UnsafeRawBufferPointer) -> Int {
        var hasher = Hasher()
        hasher.combine(bytes: bytes)
        return hasher.finalize()
    }

    public var count: Int { index.count }

    public func lookup(_ token: UnsafeRawBufferPointer, now: Double) -> VerifiedToken? {
        guard capacity > 0, let slot = index[hashFunction(token)] else { return nil }
        let same = tokens[slot].withUnsafeBytes { stored in
            stored.count == token.count && (token.count == 0 || memcmp(stored.baseAddress!, token.baseAddress!, token.count) == 0)
        }
        guard same else { return nil }
        guard now < expiries[slot] else {
            remove(slot: slot)
            return nil
        }
        referenced[slot] = true
        return values[slot]
    }

    public func insert(_ token: UnsafeRawBufferPointer, _ verified: VerifiedToken, now: Double) {
        guard capacity > 0 else { return }
        let expiry = verified.expiresAt + leeway
        guard now < expiry else { return }
        let hash = hashFunction(token)
        let slot: Int
        if let existing = index[hash] {
            slot = existing  // the same token again, or a colliding one: the newer entry replaces it
        } else if let free = freeSlots.popLast() {
            slot = free
        } else if tokens.count < capacity {
            slot = tokens.count
            tokens.append([])
            values.append(nil)
            expiries.append(0)
            hashes.append(0)
            referenced.append(false)
            occupied.append(false)
        } else {
            slot = evict()
        }
        tokens[slot] = Array(token)
        values[slot] = verified
        expiries[slot] = expiry
        hashes[slot] = hash
        referenced[slot] = false
        occupied[slot] = true
        index[hash] = slot
    }

    public func removeAll() {
        index.removeAll(keepingCapacity: true)
        tokens.removeAll()
        values.removeAll()
        expiries.removeAll()
        hashes.removeAll()
        referenced.removeAll()
        occupied.removeAll()
        freeSlots.removeAll()
        hand = 0
    }

    private func remove(slot: Int) {
        guard occupied[slot] else { return }
        index[hashes[slot]] = nil
        tokens[slot] = []
        values[slot] = nil
        occupied[slot] = false
        referenced[slot] = false
        freeSlots.append(slot)
    }

    /// CLOCK: the first unreferenced slot after the hand; referenced slots get a second chance. Only called when
    /// every slot is occupied, so this terminates within two sweeps.
    private func evict() -> Int {
        while true {
            let slot = hand
            hand = hand + 1 == tokens.count ? 0 : hand + 1
            if referenced[slot] {
                referenced[slot] = false
            } else {
                index[hashes[slot]] = nil
                occupied[slot] = false
                return slot
            }
        }
    }
}

@available(*, unavailable)
extension VerifiedTokenCache: Sendable {}
