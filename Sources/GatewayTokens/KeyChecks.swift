/// Load-time public-key sanity checks that swift-crypto does not do for us: Ed25519 point decoding and
/// small-order rejection, and the ROCA (CVE-2017-15361) RSA modulus fingerprint. None of this runs per request.
enum Ed25519KeyCheck {
    private typealias FE = [UInt64]  // 4 little-endian limbs, value < p

    private static let p: FE = [0xFFFF_FFFF_FFFF_FFED, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF]
    private static let d: FE = [0x75EB_4DCA_1359_78A3, 0x0070_0A4D_4141_D8AB, 0x8CC7_4079_7779_E898, 0x5203_6CEE_2B6F_FE73]
    private static let pMinus2: FE = [0xFFFF_FFFF_FFFF_FFEB, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF]
    private static let halfPMinus1: FE = [0xFFFF_FFFF_FFFF_FFF6, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x3FFF_FFFF_FFFF_FFFF]
    private static let zero: FE = [0, 0, 0, 0]
    private static let one: FE = [1, 0, 0, 0]
    /// y coordinates of the 8 small-order points: 0 (order 4), 1 (identity), p−1 (order 2), ±y8 (order 8).
    private static let smallOrderY: [FE] = [
        [0, 0, 0, 0],
        [1, 0, 0, 0],
        [0xFFFF_FFFF_FFFF_FFEC, 0xFFFF_FFFF_FFFF_FFFF, 0xFFFF_FFFF_FFFF_FFFF, 0x7FFF_FFFF_FFFF_FFFF],
        [0xB027_B2C2_8F95_E826, 0xF098_EFF2_89F4_C345, 0x3933_C6D3_05AC_DFD5, 0x05FC_536D_8802_38B1],
        [0x4FD8_4D3D_706A_17C7, 0x0F67_100D_760B_3CBA, 0xC6CC_392C_FA53_202A, 0x7A03_AC92_77FD_C74E],
    ]

    /// nil if `raw` is a canonical encoding of a point on the curve that is not of small order; else the reason.
    static func problem(_ raw: [UInt8]) -> String? {
        guard raw.count == 32 else { return "Ed25519 key must be 32 bytes" }
        var y: FE = [0, 0, 0, 0]
        for i in 0..<32 {
            var byte = UInt64(raw[i])
            if i == 31 { byte &= 0x7F }
            y[i / 8] |= byte << (8 * UInt64(i % 8))
        }
        let sign = raw[31] >> 7
        guard less(y, p) else { return "Ed25519 key is not canonically encoded" }
        if smallOrderY.contains(y) { return "Ed25519 key is a small-order point" }
        let y2 = mul(y, y)
        let u = sub(y2, one)
        let v = add(mul(d, y2), one)
        let x2 = mul(u, pow(v, pMinus2))
        if x2 == zero {
            if sign == 1 { return "Ed25519 key is not canonically encoded" }
            return nil
        }
        guard pow(x2, halfPMinus1) == one else { return "Ed25519 key is not a point on the curve" }
        return nil
    }

    private static func less(_ a: FE, _ b: FE) -> Bool {
        for i in stride(from: 3, through: 0, by: -1) where a[i] != b[i] { return a[i] < b[i] }
        return false
    }

    /// a − b for a ≥ b (no modular wrap).
    private static func rawSub(_ a: FE, _ b: FE) -> FE {
        var r = a
        var borrow: UInt64 = 0
        for i in 0..<4 {
            let (s1, o1) = a[i].subtractingReportingOverflow(b[i])
            let (s2, o2) = s1.subtractingReportingOverflow(borrow)
            r[i] = s2
            borrow = (o1 ? 1 : 0) + (o2 ? 1 : 0)
        }
        return r
    }

    /// Reduces a value given as up to 8 limbs modulo p, using 2^256 ≡ 38 (mod p).
    private static func reduce(_ t: [UInt64]) -> FE {
        var wide = t
        while wide.count < 8 { wide.append(0) }
        var r: [UInt64] = [0, 0, 0, 0]
        var carry: UInt128 = 0
        for i in 0..<4 {
            let s = UInt128(wide[i]) + UInt128(wide[i + 4]) * 38 + carry
            r[i] = UInt64(truncatingIfNeeded: s)
            carry = s >> 64
        }
        var top = UInt64(carry)
        while top != 0 {
            var c = UInt128(top) * 38
            for i in 0..<4 {
                let s = UInt128(r[i]) + c
                r[i] = UInt64(truncatingIfNeeded: s)
                c = s >> 64
            }
            top = UInt64(c)
        }
        while !less(r, p) { r = rawSub(r, p) }
        return r
    }

    private static func mul(_ a: FE, _ b: FE) -> FE {
        var t = [UInt64](repeating: 0, count: 8)
        for i in 0..<4 {
            var carry: UInt64 = 0
            for j in 0..<4 {
                let (hi, lo) = a[i].multipliedFullWidth(by: b[j])
                let s = UInt128(t[i + j]) + UInt128(lo) + UInt128(carry)
                t[i + j] = UInt64(truncatingIfNeeded: s)
                carry = hi &+ UInt64(s >> 64)
            }
            t[i + 4] = carry
        }
        return reduce(t)
    }

    private static func add(_ a: FE, _ b: FE) -> FE {
        var t = [UInt64](repeating: 0, count: 5)
        var carry: UInt128 = 0
        for i in 0..<4 {
            let s = UInt128(a[i]) + UInt128(b[i]) + carry
            t[i] = UInt64(truncatingIfNeeded: s)
            carry = s >> 64
        }
        // 2^256 ≡ 38: fold the carry through reduce by placing it in limb 4 (weight 2^256).
        t[4] = UInt64(carry)
        return reduce(t)
    }

    private static func sub(_ a: FE, _ b: FE) -> FE {
        add(a, rawSub(p, b))
    }

    private static func pow(_ base: FE, _ exponent: FE) -> FE {
        var result = one
        for limb in stride(from: 3, through: 0, by: -1) {
            for bit in stride(from: 63, through: 0, by: -1) {
                result = mul(result, result)
                if (exponent[limb] >> UInt64(bit)) & 1 == 1 { result = mul(result, base) }
            }
        }
        return result
    }
}

enum RSAKeyCheck {
    private static let rocaPrimes: [Int] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ]

    /// For each prime, which residues lie in the subgroup generated by 65537.
    private static let rocaSubgroups: [[Bool]] = rocaPrimes.map { prime in
        var member = [Bool](repeating: false, count: prime)
        let g = 65537 % prime
        var x = 1
        repeat {
            member[x] = true
            x = x * g % prime
        } while x != 1
        return member
    }

    /// True if the modulus carries the ROCA (Infineon RSALib, CVE-2017-15361) fingerprint.
    static func hasROCAFingerprint(_ modulus: [UInt8]) -> Bool {
        for (index, prime) in rocaPrimes.enumerated() {
            var r = 0
            for byte in modulus { r = (r << 8 | Int(byte)) % prime }
            if !rocaSubgroups[index][r] { return false }
        }
        return true
    }

    /// Number of significant bits in a big-endian unsigned integer.
    static func bitLength(_ bytes: [UInt8]) -> Int {
        guard let first = bytes.firstIndex(where: { $0 != 0 }) else { return 0 }
        return (bytes.count - first - 1) * 8 + (8 - bytes[first].leadingZeroBitCount)
    }
}
