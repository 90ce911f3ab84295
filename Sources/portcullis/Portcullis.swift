import ArgumentParser
import GatewayConfig
import GatewayJSON
import GatewayKeySets
import GatewayServer
import GatewaySessions
import GatewayTokenService
import GatewayTokens
import Logging

#if canImport(Glibc)
    import Glibc
#endif

/// `portcullis` — the command line of DESIGN §3. Exit codes: 0 ok, 1 invalid configuration or input, 2 runtime
/// failure.
@main
struct Portcullis: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Reverse-proxy authentication gateway: validates bearer tokens and forwards through libcurl.",
        subcommands: [Serve.self, Check.self, HashPassword.self, Keys.self, Token.self],
        defaultSubcommand: Serve.self
    )
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path of the configuration file.")
    var config = "gateway.json"

    init() {}

    init(config: String) {
        self.config = config
    }

    /// Loads and validates the configuration, printing every error with its JSON path; exits 1 on failure.
    func load() throws -> GatewayConfiguration {
        do {
            return try GatewayConfiguration.load(path: config, environment: environment())
        } catch {
            throw fail(error)
        }
    }

    /// Prints every configuration error with the file and JSON path, and returns exit code 1.
    func fail(_ errors: ConfigErrors) -> ExitCode {
        for e in errors.errors { printError("\(config): \(e)") }
        return ExitCode(1)
    }
}

struct Serve: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the gateway (the default command).")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let configuration = try options.load()
        let level = Logger.Level(rawValue: configuration.log.level.rawValue) ?? .info
        ProcessLog.bootstrap(level: level, format: configuration.log.format)
        let logger = Logger(label: "portcullis")
        // Log lines are queued (`ProcessLog`): let them out before the process exits or prints its own error.
        defer { ProcessLog.drain() }
        do {
            try await GatewayServer.run(
                configuration: configuration, configPath: options.config, environment: environment(), logger: logger)
        } catch let errors as ConfigErrors {
            ProcessLog.drain()
            throw options.fail(errors)
        } catch {
            ProcessLog.drain()
            printError("portcullis: \(error)")
            throw ExitCode(2)
        }
    }
}

struct Check: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Validate the configuration, its keys and files; exit 0 or 1.")

    @OptionGroup var options: ConfigOption

    func run() async throws {
        let configuration = try options.load()
        do {
            let loaded = try IssuerLoader.load(configuration)
            for warning in loaded.warnings { printError("\(options.config): warning: \(warning)") }
            if let tls = configuration.tls { try GatewayServer.checkListenerTLS(tls) }
            try GatewayServer.checkUpstreamHTTPVersions(configuration, environment: environment())
            if let service = configuration.tokenService {
                _ = try TokenServiceUsers.load(service)
                _ = try FleetKeys.requiredSecret(service, store: configuration.store)
            }
        } catch {
            throw options.fail(error)
        }
        // A shared database is part of the configuration's truth: an unreachable host, a refused password or a TLS
        // failure is found here, before a deployment rolls out (DESIGN §9). No file is created for SQLite.
        if configuration.tokenService != nil, configuration.store.kind == .postgres {
            do {
                let store = try await SessionStores.open(configuration.store)
                await store.close()
            } catch let errors as ConfigErrors {
                throw options.fail(errors)
            } catch {
                printError("\(options.config): store: \(error)")
                throw ExitCode(1)
            }
        }
        print(
            "\(options.config): ok (\(configuration.routes.count) routes, \(configuration.upstreams.count) upstreams, \(configuration.issuers.count) issuers)"
        )
    }
}

struct HashPassword: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "hash-password",
        abstract: "Read a password on standard input and print its bcrypt ($2b$) hash for the users file.")

    @Option(help: "bcrypt cost (4–31).") var cost = 12

    func run() async throws {
        guard (4...31).contains(cost) else {
            printError("portcullis: --cost must be between 4 and 31")
            throw ExitCode(1)
        }
        guard var password = readLine(strippingNewline: true), !password.isEmpty else {
            printError("portcullis: no password on standard input")
            throw ExitCode(1)
        }
        if password.hasSuffix("\r") { password.removeLast() }
        guard let hash = PasswordHasher.hash(password, cost: cost) else {
            printError("portcullis: hashing failed")
            throw ExitCode(2)
        }
        print(hash)
    }
}

struct Keys: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Manage the token service's signing keys.", subcommands: [Generate.self])

    struct Generate: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add a new signing key and make it current; earlier keys stay published.")

        @Option(help: "ES256, EdDSA, RS256 or PS256.") var algorithm = "ES256"
        @Option(help: "Key folder (default: token_service.signing.key_dir of --config).") var dir: String?
        @Option(help: "Configuration file, for the default key folder (or the postgres store holding the keys).")
        var config = "gateway.json"

        func run() async throws {
            guard let alg = JWSAlgorithm(rawValue: algorithm), SigningKey.supportedAlgorithms.contains(alg) else {
                printError("portcullis: --algorithm must be one of ES256, EdDSA, RS256, PS256")
                throw ExitCode(1)
            }
            let directory: String
            if let dir {
                directory = dir
            } else {
                let configuration = try ConfigOption(config: config).load()
                guard let service = configuration.tokenService else {
                    printError("\(config): token_service is not configured; pass --dir")
                    throw ExitCode(1)
                }
                if configuration.store.kind == .postgres, let postgres = configuration.store.postgres {
                    try await generateInDatabase(postgres, service: service, algorithm: alg)
                    return
                }
                directory = service.keyDirectory
            }
            do {
                let key = try SigningKeyStore.generate(directory: directory, algorithm: alg)
                print("\(key.kid) \(alg.rawValue) \(directory)/\(key.kid).\(alg.rawValue).pem (current)")
            } catch {
                printError("portcullis: \(error)")
                throw ExitCode(2)
            }
        }
    }
}

extension Keys.Generate {
    /// A postgres store keeps the fleet's keys (DESIGN §9): the new key is published by every replica at once and
    /// signs after `signing.activation_delay_seconds`; the first key of an empty store signs at once.
    func generateInDatabase(_ postgres: PostgresStore, service: TokenService, algorithm: JWSAlgorithm) async throws {
        let options = ConfigOption(config: config)
        guard let secret = service.keyEncryptionKey else {
            printError("\(config): token_service.signing.key_encryption_key: is required to keep signing keys in a postgres store")
            throw ExitCode(1)
        }
        let store: PostgresSessionStore
        let kek: [UInt8]
        do {
            kek = try secret.bytes(path: "token_service.signing.key_encryption_key")
            store = try await PostgresSessionStore.open(try PostgresConnectionSettings(postgres))
        } catch let errors as ConfigErrors {
            throw options.fail(errors)
        } catch {
            printError("\(config): store: \(error)")
            throw ExitCode(1)
        }
        do {
            let keys = try store.signingKeys(keyEncryptionKey: kek)
            let now = GatewayServer.wallClock()
            if try await keys.keys().isEmpty {
                let first = try await keys.keysCreatingFirst(algorithm: algorithm, now: now)
                for key in first { print("\(key.key.kid) \(key.key.algorithm.rawValue) in the store (current)") }
            } else {
                let delay = Double(service.activationDelaySeconds)
                let key = try await keys.add(algorithm: algorithm, now: now, activationDelay: delay)
                print("\(key.key.kid) \(algorithm.rawValue) in the store (published now, signs in \(Int(delay)) s)")
            }
        } catch {
            await store.close()
            printError("portcullis: \(error)")
            throw ExitCode(2)
        }
        await store.close()
    }
}

struct Token: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Developer tokens.", subcommands: [Issue.self])

    struct Issue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Mint an access token with the token service's current signing key and print it.")

        @Option(help: "The token's subject.") var sub: String
        @Option(help: "Space-separated scopes.") var scope = ""
        @Option(help: "Lifetime in seconds.") var ttl = 900
        @OptionGroup var options: ConfigOption

        func run() async throws {
            let configuration = try options.load()
            guard let service = configuration.tokenService else {
                printError("\(options.config): token_service is not configured")
                throw ExitCode(1)
            }
            guard (1...31_536_000).contains(ttl), !sub.isEmpty else {
                printError("portcullis: --sub must not be empty and --ttl must be between 1 and 31536000")
                throw ExitCode(1)
            }
            let store: SigningKeyStore
            do {
                store = try TokenServiceKeys.store(service)
            } catch {
                throw options.fail(error)
            }
            let issuer = AccessTokenIssuer(issuer: service.issuer, audience: service.audience, key: store.current)
            let scopes = scope.split(separator: " ").map(String.init)
            print(try issuer.issue(subject: sub, scopes: scopes, lifetime: ttl, now: GatewayServer.wallClock()))
        }
    }
}

func environment() -> [String: String] {
    var result: [String: String] = [:]
    var pointer = environ
    while let entry = pointer.pointee {
        let text = String(cString: entry)
        if let eq = text.firstIndex(of: "=") {
            result[String(text[..<eq])] = String(text[text.index(after: eq)...])
        }
        pointer += 1
    }
    return result
}

func printError(_ message: String) {
    var line = message + "\n"
    line.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
