import Foundation
import GatewaySessions
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// A throwaway PostgreSQL server for the tests: `initdb` into a fresh temporary directory, `postgres` on a free
/// loopback port with its unix socket inside that directory, fsync off. A role `portcullis` (password, SCRAM over
/// TCP) may create databases; every test asks for its own with `createDatabase()`, so tests stay independent and
/// can run in parallel.
///
/// `shared` is the one server most tests use, started on first use and stopped (immediate shutdown, directory
/// removed) when the test process exits. Tests that stop the server (outages) start their own with `start()`.
///
/// PostgreSQL refuses to run as root, and CI runs as root: then `initdb` and `postgres` run as the `postgres` user
/// (created by Debian's package), through `setpriv`, in a directory handed to that user.
final class PostgresTestServer: Sendable {
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let directory: String
    let port: Int
    let user = "portcullis"
    let password: String
    /// Whether the server only accepts TLS over TCP (`hostssl`), with a certificate for 127.0.0.1 and localhost
    /// issued by `caFile`.
    let tls: Bool
    private let process = NIOLockedValueBox<Process?>(nil)

    /// The test CA that issued the server's certificate (TLS servers).
    var caFile: String { directory + "/tls/ca.pem" }

    var dataDirectory: String { directory + "/data" }
    var socketDirectory: String { directory + "/sock" }

    private init(directory: String, port: Int, password: String, tls: Bool) {
        self.directory = directory
        self.port = port
        self.password = password
        self.tls = tls
    }

    // MARK: - The shared server

    private static let sharedResult: Result<PostgresTestServer, Failure> = {
        do {
            let server = try PostgresTestServer.start()
            atexit { PostgresTestServer.stopShared() }
            return .success(server)
        } catch {
            return .failure(Failure(description: "cannot start the test PostgreSQL server: \(error)"))
        }
    }()

    /// The server shared by the test process, started on first use.
    static func shared() throws -> PostgresTestServer {
        try sharedResult.get()
    }

    private static func stopShared() {
        if case .success(let server) = sharedResult { server.destroy() }
    }

    private static let sharedTLSResult: Result<PostgresTestServer, Failure> = {
        do {
            let server = try PostgresTestServer.start(tls: true)
            atexit { PostgresTestServer.stopSharedTLS() }
            return .success(server)
        } catch {
            return .failure(Failure(description: "cannot start the test PostgreSQL server with TLS: \(error)"))
        }
    }()

    /// A second shared server that accepts TCP only with TLS, started on first use, stopped at exit.
    static func sharedTLS() throws -> PostgresTestServer {
        try sharedTLSResult.get()
    }

    private static func stopSharedTLS() {
        if case .success(let server) = sharedTLSResult { server.destroy() }
    }

    // MARK: - Life cycle

    /// A new server of its own (initdb, start, role); `destroy()` it at the end. With `tls`, TCP connections must
    /// use TLS.
    static func start(tls: Bool = false) throws -> PostgresTestServer {
        let bin = try binDirectory()
        var template = Array("/tmp/pcpg-XXXXXX".utf8CString)
        guard let made = mkdtemp(&template) else { throw Failure(description: "mkdtemp failed") }
        let directory = String(cString: made)
        let server = PostgresTestServer(
            directory: directory, port: try freePort(), password: "pw-" + UUID().uuidString, tls: tls)
        do {
            try server.initialise(bin: bin)
            try server.launch()
            try server.run(
                bin + "/psql",
                [
                    "-X", "-q", "-h", server.socketDirectory, "-p", "\(server.port)", "-U", "postgres", "-d", "postgres",
                    "-v", "ON_ERROR_STOP=1", "-c",
                    "CREATE ROLE portcullis LOGIN CREATEDB PASSWORD '\(server.password)'",
                ])
        } catch {
            server.destroy()
            throw error
        }
        return server
    }

    private func initialise(bin: String) throws {
        try FileManager.default.createDirectory(atPath: socketDirectory, withIntermediateDirectories: true)
        if Self.runsAsRoot {
            // The server's user must own the directory (initdb creates `data` inside it, mode 0700).
            try run("/bin/chown", ["-R", "postgres:postgres", directory], asPostgres: false)
        }
        try run(
            bin + "/initdb",
            [
                "-D", dataDirectory, "-U", "postgres", "-E", "UTF8", "--no-sync", "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
        // Only loopback TCP with a password, and the local socket for the test's administration.
        let hba = """
            local all postgres trust
            \(tls ? "hostssl" : "host") all all 127.0.0.1/32 scram-sha-256

            """
        try hba.write(toFile: dataDirectory + "/pg_hba.conf", atomically: false, encoding: .utf8)
        if tls { try makeCertificates() }
    }

    /// A CA and a server certificate for 127.0.0.1 and localhost (P-256), and the server's TLS settings.
    private func makeCertificates() throws {
        let dir = directory + "/tls"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\n".write(toFile: dir + "/san.ext", atomically: false, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        try run(
            "/usr/bin/openssl",
            ["req", "-x509"] + ec + ["-keyout", dir + "/ca.key", "-out", dir + "/ca.pem", "-days", "2", "-subj", "/CN=portcullis-test-ca"],
            asPostgres: false)
        try run(
            "/usr/bin/openssl", ["req"] + ec + ["-keyout", dir + "/server.key", "-out", dir + "/server.csr", "-subj", "/CN=localhost"],
            asPostgres: false)
        try run(
            "/usr/bin/openssl",
            [
                "x509", "-req", "-in", dir + "/server.csr", "-CA", dir + "/ca.pem", "-CAkey", dir + "/ca.key", "-CAcreateserial",
                "-out", dir + "/server.pem", "-days", "2", "-extfile", dir + "/san.ext",
            ], asPostgres: false)
        _ = chmod(dir + "/server.key", 0o600)
        if Self.runsAsRoot { try run("/bin/chown", ["-R", "postgres:postgres", dir], asPostgres: false) }
        let settings = "\nssl = on\nssl_cert_file = '\(dir)/server.pem'\nssl_key_file = '\(dir)/server.key'\n"
        let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: dataDirectory + "/postgresql.conf"))
        handle.seekToEndOfFile()
        handle.write(Data(settings.utf8))
        try handle.close()
    }

    /// Starts `postgres` (again, after `stop()`) on the same port and data directory, and waits until it accepts
    /// connections.
    func launch() throws {
        let bin = try Self.binDirectory()
        let process = Process()
        var arguments = [
            bin + "/postgres", "-D", dataDirectory, "-p", "\(port)", "-k", socketDirectory,
            "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off",
            "-c", "full_page_writes=off", "-c", "max_connections=300", "-c", "shared_buffers=32MB",
            "-c", "password_encryption=scram-sha-256",
        ]
        if Self.runsAsRoot { arguments = Self.asPostgres + arguments }
        process.executableURL = URL(fileURLWithPath: arguments[0])
        process.arguments = Array(arguments.dropFirst())
        let logPath = directory + "/postgres.log"
        _ = FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)
        log?.seekToEndOfFile()
        process.standardOutput = log
        process.standardError = log
        try process.run()
        self.process.withLockedValue { $0 = process }
        // Ready when pg_isready says so: the port opens before crash recovery ends (after an immediate stop), and
        // connections are refused ("starting up") until it has.
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if !process.isRunning {
                let text = (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? ""
                throw Failure(description: "postgres exited at start: \(text.suffix(2000))")
            }
            if Self.canConnect(port: port),
                (try? run(bin + "/pg_isready", ["-q", "-h", "127.0.0.1", "-p", "\(port)"], asPostgres: false)) != nil
            {
                return
            }
            usleep(50_000)
        }
        throw Failure(description: "postgres did not accept connections within 30 s")
    }

    /// Immediate shutdown (SIGQUIT: the postmaster stops its children and exits, no checkpoint); the data directory
    /// stays, so `launch()` starts the same server again.
    func stop() {
        guard
            let process = self.process.withLockedValue({ p -> Process? in
                defer { p = nil }
                return p
            })
        else { return }
        if process.isRunning {
            kill(process.processIdentifier, SIGQUIT)
            process.waitUntilExit()
        }
    }

    /// Stops the server and removes its directory.
    func destroy() {
        stop()
        try? FileManager.default.removeItem(atPath: directory)
    }

    // MARK: - For tests

    /// A new empty database owned by `portcullis` (made over the unix socket, so it works for TLS servers too).
    func createDatabase() async throws -> String {
        let name = "t_" + UUID().uuidString.replacingOccurrences(of: "-", with: "").lowercased()
        try run(
            try Self.binDirectory() + "/psql",
            [
                "-X", "-q", "-h", socketDirectory, "-p", "\(port)", "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
                "-c", "CREATE DATABASE \(name) OWNER \(user)",
            ], asPostgres: false)
        return name
    }

    /// Connection settings for `database` on this server. The deadline defaults to 10 s: tests about deadlines set a
    /// short one; the others must not trip over one on a loaded machine or in a sanitizer build (a migration under
    /// AddressSanitizer took over 2 s).
    func settings(
        database: String, tls: PostgresConnectionSettings.TLSMode = .disable, connectTimeoutMilliseconds: Int = 10_000,
        poolSize: Int = 4
    ) -> PostgresConnectionSettings {
        PostgresConnectionSettings(
            host: "127.0.0.1", port: port, user: user, password: password, database: database, tls: tls,
            poolSize: poolSize, connectTimeoutMilliseconds: connectTimeoutMilliseconds)
    }

    /// `postgres://…` for `database` (the password is separate, as in gateway.json).
    func url(database: String) -> String {
        "postgres://\(user)@127.0.0.1:\(port)/\(database)?sslmode=disable"
    }

    // MARK: - Helpers

    private static let runsAsRoot = geteuid() == 0
    private static let asPostgres = ["/usr/bin/setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]

    private func run(_ executable: String, _ arguments: [String], asPostgres: Bool = true) throws {
        var argv = [executable] + arguments
        if asPostgres && Self.runsAsRoot { argv = Self.asPostgres + argv }
        let process = Process()
        process.executableURL = URL(fileURLWithPath: argv[0])
        process.arguments = Array(argv.dropFirst())
        let output = Pipe()
        process.standardOutput = output
        process.standardError = output
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            throw Failure(description: "\(executable) failed: \(String(decoding: data, as: UTF8.self).suffix(2000))")
        }
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` (or `$PORTCULLIS_PG_BIN`).
    static func binDirectory() throws -> String {
        if let bin = ProcessInfo.processInfo.environment["PORTCULLIS_PG_BIN"] { return bin }
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? [])
            .compactMap(Int.init).sorted()
        guard let newest = versions.last, FileManager.default.fileExists(atPath: "\(root)/\(newest)/bin/postgres") else {
            throw Failure(description: "PostgreSQL is not installed (run scripts/install-deps --test)")
        }
        return "\(root)/\(newest)/bin"
    }

    static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw Failure(description: "socket failed") }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = 0
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer -> Bool in
                bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
            }
        }
        guard bound else { throw Failure(description: "bind failed") }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    static func canConnect(port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        address.sin_port = UInt16(port).bigEndian
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }
}

/// Opens a store, retrying a few times: tests that use a short deadline (to see it expire later) may miss it while
/// connecting on a loaded machine.
func openRetrying(_ settings: PostgresConnectionSettings) async throws -> PostgresSessionStore {
    // Tests with a short connect timeout (for the outage they provoke) can miss it while opening on a loaded machine
    // (parallel suites, a server just started): retry for up to 15 s rather than a fixed number of times.
    let deadline = ContinuousClock.now + .seconds(15)
    while ContinuousClock.now < deadline {
        if let store = try? await PostgresSessionStore.open(settings) { return store }
        try await Task.sleep(for: .milliseconds(100))
    }
    return try await PostgresSessionStore.open(settings)
}
