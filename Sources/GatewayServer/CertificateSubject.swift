import NIOSSL

/// A certificate subject as text for the upstream (RFC 4514: most specific attribute first, `CN=alice,O=Example`).
enum CertificateSubject {
    /// The subject's attributes that swift-nio-ssl can name; others are left out.
    static func rfc4514(_ names: [SSLCertificateName]) -> String {
        names.reversed().compactMap { name -> String? in
            guard let type = shortName(name.type) else { return nil }
            return "\(type)=\(escape(name.value))"
        }.joined(separator: ",")
    }

    static func shortName(_ type: SSLCertificateNameType) -> String? {
        switch type {
        case .commonName: "CN"
        case .organization: "O"
        case .organizationalUnit: "OU"
        case .country: "C"
        case .state: "ST"
        case .city: "L"
        case .emailAddress: "emailAddress"
        case .userId: "UID"
        default: nil
        }
    }

    /// RFC 4514 §2.4: `,` `+` `"` `\` `<` `>` `;` are escaped anywhere, `#` and space at the start, space at the end.
    /// (Bytes outside printable ASCII are percent-encoded later, like every identity value.)
    static func escape(_ value: String) -> String {
        var out = ""
        out.reserveCapacity(value.utf8.count)
        let characters = Array(value)
        for (i, c) in characters.enumerated() {
            switch c {
            case ",", "+", "\"", "\\", "<", ">", ";": out.append("\\")
            case "#" where i == 0: out.append("\\")
            case " " where i == 0 || i == characters.count - 1: out.append("\\")
            default: break
            }
            out.append(c)
        }
        return out
    }
}
