import GatewayJSON

/// One user of the token service's users file.
public struct UserRecord: Sendable, Hashable {
    public var username: String
    public var passwordHash: String
    /// The `sub` of the user's tokens (the username when not given).
    public var subject: String
    public var scopes: [String]
    /// Extra claims put into the user's access tokens.
    public var claims: JSONObject
}

/// A problem in the users file, located by JSON path or line number, never quoting a hash.
public struct UsersFileError: Error, Sendable, Hashable, CustomStringConvertible {
    public var location: String
    public var message: String
    public var description: String { "\(location): \(message)" }
}

/// The token service's users (DESIGN §4 `users_file`): JSON `{"users": [{"username", "password_hash", "subject"?,
/// "scopes"?, "claims"?}]}` or htpasswd `name:hash` lines. Hashes must be crypt(3) strings of an accepted method;
/// plaintext is refused.
public struct UsersFile: Sendable {
    public let users: [String: UserRecord]
    /// A hash of a random password with the settings of a real entry: an unknown username is checked against it,
    /// so that "no such user" and "wrong password" take the same time.
    private let decoyHash: String?

    public init(users: [UserRecord]) {
        var byName: [String: UserRecord] = [:]
        for user in users { byName[user.username] = user }
        self.users = byName
        self.decoyHash = users.first.flatMap { user in
            PasswordHasher.crypt(PasswordHasher.randomSecret(), setting: user.passwordHash)
        }
    }

    /// The user whose name and password match, or nil — after the same amount of hashing either way.
    public func authenticate(username: String, password: String) -> UserRecord? {
        guard let user = users[username] else {
            if let decoyHash { _ = PasswordHasher.verify(password, hash: decoyHash) }
            return nil
        }
        return PasswordHasher.verify(password, hash: user.passwordHash) ? user : nil
    }

    public static func parse(_ bytes: [UInt8]) throws(UsersFileError) -> UsersFile {
        let first = bytes.first { ![0x20, 0x09, 0x0A, 0x0D].contains($0) }
        return first == UInt8(ascii: "{") ? try parseJSON(bytes) : try parseHtpasswd(bytes)
    }

    static func parseJSON(_ bytes: [UInt8]) throws(UsersFileError) -> UsersFile {
        let document: JSONValue
        do {
            document = try JSONParser.parse(bytes, limits: .document)
        } catch {
            throw UsersFileError(location: error.path.jsonPathString, message: error.message)
        }
        guard let root = document.objectValue, let list = root["users"]?.arrayValue else {
            throw UsersFileError(location: "$", message: "expected {\"users\": [...]}")
        }
        for name in root.keys where name != "users" { throw UsersFileError(location: name, message: "unknown key") }
        var users: [UserRecord] = []
        var seen: Set<String> = []
        for (i, entry) in list.enumerated() {
            let at = "users[\(i)]"
            guard let object = entry.objectValue else { throw UsersFileError(location: at, message: "expected an object") }
            for name in object.keys where !["username", "password_hash", "subject", "scopes", "claims"].contains(name) {
                throw UsersFileError(location: "\(at).\(name)", message: "unknown key")
            }
            guard let username = object["username"]?.stringValue, !username.isEmpty else {
                throw UsersFileError(location: "\(at).username", message: "a non-empty string is required")
            }
            guard seen.insert(username).inserted else {
                throw UsersFileError(location: "\(at).username", message: "user \(JSONWriter.quoted(username)) is listed twice")
            }
            guard let hash = object["password_hash"]?.stringValue else {
                throw UsersFileError(location: "\(at).password_hash", message: "a string is required")
            }
            try checkHash(hash, location: "\(at).password_hash")
            var subject = username
            if let value = object["subject"] {
                guard let s = value.stringValue, !s.isEmpty else {
                    throw UsersFileError(location: "\(at).subject", message: "expected a non-empty string")
                }
                subject = s
            }
            var scopes: [String] = []
            if let value = object["scopes"] {
                guard let array = value.arrayValue else {
                    throw UsersFileError(location: "\(at).scopes", message: "expected an array of strings")
                }
                for (j, scope) in array.enumerated() {
                    guard let s = scope.stringValue, !s.isEmpty, !s.contains(" ") else {
                        throw UsersFileError(location: "\(at).scopes[\(j)]", message: "a scope is a non-empty string without spaces")
                    }
                    scopes.append(s)
                }
            }
            var claims = JSONObject()
            if let value = object["claims"] {
                guard let o = value.objectValue else { throw UsersFileError(location: "\(at).claims", message: "expected an object") }
                claims = o
            }
            users.append(UserRecord(username: username, passwordHash: hash, subject: subject, scopes: scopes, claims: claims))
        }
        return UsersFile(users: users)
    }

    static func parseHtpasswd(_ bytes: [UInt8]) throws(UsersFileError) -> UsersFile {
        var users: [UserRecord] = []
        var seen: Set<String> = []
        // Split on bytes: as Characters, "\r\n" is one grapheme and would never equal "\n".
        for (number, rawLine) in bytes.split(separator: 0x0A, omittingEmptySubsequences: false).enumerated() {
            let line = Substring(String(decoding: rawLine.last == 0x0D ? rawLine.dropLast() : rawLine, as: UTF8.self))
            if line.allSatisfy({ $0 == " " || $0 == "\t" }) || line.hasPrefix("#") { continue }
            let at = "line \(number + 1)"
            guard let colon = line.firstIndex(of: ":") else { throw UsersFileError(location: at, message: "expected name:hash") }
            let username = String(line[..<colon])
            let hash = String(line[line.index(after: colon)...])
            guard !username.isEmpty else { throw UsersFileError(location: at, message: "empty user name") }
            guard seen.insert(username).inserted else { throw UsersFileError(location: at, message: "user is listed twice") }
            try checkHash(hash, location: at)
            users.append(UserRecord(username: username, passwordHash: hash, subject: username, scopes: [], claims: JSONObject()))
        }
        return UsersFile(users: users)
    }

    static func checkHash(_ hash: String, location: String) throws(UsersFileError) {
        guard PasswordHasher.isAcceptedHash(hash) else {
            throw UsersFileError(
                location: location,
                message:
                    "not an accepted crypt(3) hash (bcrypt $2b$/$2y$, yescrypt $y$ or sha512-crypt $6$); plaintext and weak methods are refused"
            )
        }
        // A malformed hash (bad cost, truncated salt) is refused now rather than failing every login later. The
        // check is structural: hashing once per user would make start-up cost seconds per hundred users.
        guard PasswordHasher.isWellFormed(hash) else {
            throw UsersFileError(location: location, message: "malformed password hash")
        }
    }
}
