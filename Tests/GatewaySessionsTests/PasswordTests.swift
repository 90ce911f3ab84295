import GatewayJSON
import Testing

@testable import GatewaySessions

@Suite struct PasswordTests {
    /// Published vectors: the sha-crypt specification's "Hello world!" example and OpenBSD's bcrypt "U*U" vector.
    @Test func knownVectors() {
        #expect(
            PasswordHasher.verify(
                "Hello world!", hash: "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"
            ))
        #expect(PasswordHasher.verify("U*U", hash: "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
        #expect(PasswordHasher.verify("U*U", hash: "$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
        #expect(!PasswordHasher.verify("U*V", hash: "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
    }

    @Test func weakMethodsNeverMatch() {
        // The same bcrypt value under the legacy $2a$ prefix, MD5-crypt, DES and plaintext are all refused.
        #expect(!PasswordHasher.verify("U*U", hash: "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
        #expect(!PasswordHasher.verify("password", hash: "$1$saltsalt$2vnaRpHa6Jxjz5n83ok8Z0"))
        #expect(!PasswordHasher.verify("password", hash: "sa3tHJ3/KuYvI"))
        #expect(!PasswordHasher.verify("password", hash: "password"))
        #expect(!PasswordHasher.verify("pass\u{0}word", hash: "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
    }

    @Test func hashRoundTrip() throws {
        let hash = try #require(PasswordHasher.hash("correct horse", cost: 4))
        #expect(hash.hasPrefix("$2b$04$"))
        #expect(PasswordHasher.isWellFormed(hash))
        #expect(PasswordHasher.verify("correct horse", hash: hash))
        #expect(!PasswordHasher.verify("correct horsE", hash: hash))
    }

    @Test func usersFileJSON() throws {
        let hash = try #require(PasswordHasher.hash("s3cret", cost: 4))
        let file = try UsersFile.parse(
            Array(
                """
                {"users": [{"username": "alice", "password_hash": "\(hash)", "subject": "u-1", "scopes": ["read"],
                            "claims": {"email": "a@b.test"}},
                           {"username": "bob", "password_hash": "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1"}]}
                """.utf8))
        let alice = try #require(file.authenticate(username: "alice", password: "s3cret"))
        #expect(alice.subject == "u-1" && alice.scopes == ["read"] && alice.claims["email"] == .string("a@b.test"))
        #expect(file.authenticate(username: "alice", password: "wrong") == nil)
        #expect(file.authenticate(username: "nobody", password: "s3cret") == nil)
        #expect(file.authenticate(username: "bob", password: "Hello world!")?.subject == "bob")
    }

    @Test func usersFileHtpasswd() throws {
        let file = try UsersFile.parse(
            Array(
                """
                # htpasswd -B
                bob:$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\r

                carol:$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYEdFCoEOfaS35inz1
                """.utf8))
        #expect(file.users.count == 2)
        #expect(file.authenticate(username: "bob", password: "U*U")?.subject == "bob")
    }

    @Test(arguments: [
        (#"{"users": [{"username": "a", "password_hash": "plaintext"}]}"#, "users[0].password_hash"),
        (#"{"users": [{"username": "a", "password_hash": "$2b$05$short"}]}"#, "users[0].password_hash"),
        (
            #"{"users": [{"username": "a", "password_hash": "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"}, {"username": "a", "password_hash": "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"}]}"#,
            "users[1].username"
        ),
        (#"{"users": [{"username": "a", "password": "x"}]}"#, "users[0].password"),
        (#"{"users": [], "extra": 1}"#, "extra"),
        ("alice:secret\n", "line 1"),
        ("alice\n", "line 1"),
        ("ok:$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW\nbad:$1$x$y\n", "line 2"),
    ])
    func usersFileErrorsNameTheLocation(text: String, location: String) {
        do {
            _ = try UsersFile.parse(Array(text.utf8))
            Issue.record("accepted: \(text)")
        } catch {
            #expect(error.location == location, "\(error)")
            #expect(!error.message.contains("CCCCCCCC") && !error.message.contains("secret"))  // never quotes a hash
        }
    }
}
