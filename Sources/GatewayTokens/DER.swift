/// Just enough DER to find a SubjectPublicKeyInfo (RFC 5280 §4.1) in a certificate and to read its algorithm
/// identifier. Every read is bounds-checked; indefinite lengths and lengths over 2^24 are refused.
struct DERReader {
    struct Element {
        var tag: UInt8
        /// The whole TLV.
        var full: ArraySlice<UInt8>
        /// The contents only.
        var contents: ArraySlice<UInt8>
    }

    private var bytes: ArraySlice<UInt8>

    init(_ bytes: ArraySlice<UInt8>) { self.bytes = bytes }

    var isAtEnd: Bool { bytes.isEmpty }

    mutating func next() -> Element? {
        var i = bytes.startIndex
        guard i < bytes.endIndex else { return nil }
        let tag = bytes[i]
        // High-tag-number form is not used by anything we read.
        guard tag & 0x1F != 0x1F else { return nil }
        i += 1
        guard i < bytes.endIndex else { return nil }
        let first = bytes[i]
        i += 1
        var length = 0
        if first < 0x80 {
            length = Int(first)
        } else {
            let count = Int(first & 0x7F)
            guard count >= 1, count <= 3 else { return nil }
            for _ in 0..<count {
                guard i < bytes.endIndex else { return nil }
                length = length << 8 | Int(bytes[i])
                i += 1
            }
            // DER: minimal length encoding.
            guard length >= 0x80, length >= 1 << (8 * (count - 1)) else { return nil }
        }
        guard bytes.endIndex - i >= length else { return nil }
        let element = Element(tag: tag, full: bytes[bytes.startIndex..<(i + length)], contents: bytes[i..<(i + length)])
        bytes = bytes[(i + length)...]
        return element
    }
}

enum SPKI {
    static let oidRSAEncryption: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x01]
    static let oidRSAPSS: [UInt8] = [0x2A, 0x86, 0x48, 0x86, 0xF7, 0x0D, 0x01, 0x01, 0x0A]
    static let oidECPublicKey: [UInt8] = [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x02, 0x01]
    static let oidP256: [UInt8] = [0x2A, 0x86, 0x48, 0xCE, 0x3D, 0x03, 0x01, 0x07]
    static let oidP384: [UInt8] = [0x2B, 0x81, 0x04, 0x00, 0x22]
    static let oidEd25519: [UInt8] = [0x2B, 0x65, 0x70]

    enum KeyType: Equatable {
        case rsa
        case p256
        case p384
        case ed25519(raw: [UInt8])
        case unsupported
    }

    /// Reads the algorithm of a DER SubjectPublicKeyInfo; nil if it is not a well-formed SPKI.
    static func keyType(_ der: [UInt8]) -> KeyType? {
        var outer = DERReader(der[...])
        guard let spki = outer.next(), spki.tag == 0x30, outer.isAtEnd else { return nil }
        var fields = DERReader(spki.contents)
        guard let algorithm = fields.next(), algorithm.tag == 0x30,
            let bitString = fields.next(), bitString.tag == 0x03, fields.isAtEnd
        else { return nil }
        var alg = DERReader(algorithm.contents)
        guard let oid = alg.next(), oid.tag == 0x06 else { return nil }
        let parameters = alg.next()
        guard alg.isAtEnd else { return nil }
        let oidBytes = Array(oid.contents)
        if oidBytes == oidRSAEncryption || oidBytes == oidRSAPSS { return .rsa }
        if oidBytes == oidECPublicKey {
            guard let parameters, parameters.tag == 0x06 else { return .unsupported }
            let curve = Array(parameters.contents)
            if curve == oidP256 { return .p256 }
            if curve == oidP384 { return .p384 }
            return .unsupported
        }
        if oidBytes == oidEd25519 {
            // RFC 8410: parameters absent; BIT STRING with 0 unused bits and 32 key bytes.
            guard parameters == nil, bitString.contents.count == 33, bitString.contents.first == 0 else { return nil }
            return .ed25519(raw: Array(bitString.contents.dropFirst()))
        }
        return .unsupported
    }

    /// The SubjectPublicKeyInfo TLV inside an X.509 certificate.
    static func fromCertificate(_ der: [UInt8]) -> [UInt8]? {
        var outer = DERReader(der[...])
        guard let certificate = outer.next(), certificate.tag == 0x30, outer.isAtEnd else { return nil }
        var certFields = DERReader(certificate.contents)
        guard let tbs = certFields.next(), tbs.tag == 0x30 else { return nil }
        var fields = DERReader(tbs.contents)
        guard var element = fields.next() else { return nil }
        if element.tag == 0xA0 {  // [0] EXPLICIT version
            guard let nextElement = fields.next() else { return nil }
            element = nextElement
        }
        // element is serialNumber; then signature, issuer, validity, subject, subjectPublicKeyInfo.
        guard element.tag == 0x02 else { return nil }
        for expected in [UInt8(0x30), 0x30, 0x30, 0x30] {
            guard let e = fields.next(), e.tag == expected else { return nil }
        }
        guard let spki = fields.next(), spki.tag == 0x30 else { return nil }
        return Array(spki.full)
    }
}

/// A single PEM block. Exactly one `-----BEGIN X-----` / `-----END X-----` pair; only whitespace may surround it.
enum PEM {
    static func parse(_ text: String) -> (label: String, der: [UInt8])? {
        let bytes = Array(text.utf8)
        let begin = Array("-----BEGIN ".utf8)
        let end = Array("-----END ".utf8)
        let dashes = Array("-----".utf8)
        guard let beginAt = find(begin, in: bytes, from: 0) else { return nil }
        // Nothing but whitespace before the block.
        guard bytes[0..<beginAt].allSatisfy(isWhitespace) else { return nil }
        let labelStart = beginAt + begin.count
        guard let labelEnd = find(dashes, in: bytes, from: labelStart) else { return nil }
        let label = Array(bytes[labelStart..<labelEnd])
        guard !label.isEmpty, label.allSatisfy({ $0 >= 0x20 && $0 < 0x7F && $0 != UInt8(ascii: "-") }) else { return nil }
        let bodyStart = labelEnd + dashes.count
        guard let endAt = find(end, in: bytes, from: bodyStart) else { return nil }
        let endLabelStart = endAt + end.count
        guard let endLabelEnd = find(dashes, in: bytes, from: endLabelStart),
            Array(bytes[endLabelStart..<endLabelEnd]) == label
        else { return nil }
        let trailer = bytes[(endLabelEnd + dashes.count)...]
        guard trailer.allSatisfy(isWhitespace) else { return nil }
        let body = bytes[bodyStart..<endAt]
        // A second BEGIN inside the body means two blocks were concatenated.
        guard find(begin, in: Array(body), from: 0) == nil else { return nil }
        guard let der = Base64Standard.decode(body), !der.isEmpty else { return nil }
        return (String(decoding: label, as: UTF8.self), der)
    }

    private static func isWhitespace(_ c: UInt8) -> Bool {
        c == UInt8(ascii: " ") || c == UInt8(ascii: "\n") || c == UInt8(ascii: "\r") || c == UInt8(ascii: "\t")
    }

    private static func find(_ needle: [UInt8], in haystack: [UInt8], from: Int) -> Int? {
        guard needle.count <= haystack.count, from <= haystack.count - needle.count else { return nil }
        var i = from
        while i <= haystack.count - needle.count {
            if haystack[i] == needle[0], Array(haystack[i..<(i + needle.count)]) == needle { return i }
            i += 1
        }
        return nil
    }
}
