import ArgumentParser
import GatewayConfig
import GatewayServer
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
        subcommands: [Serve.self, Check.self],
        defaultSubcommand: Serve.self
    )
}

struct ConfigOption: ParsableArguments {
    @Option(name: .long, help: "Path of the configuration file.")
    var config = "gateway.json"

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
        let format = configuration.log.format
        LoggingSystem.bootstrap { label in
            switch format {
            case .json:
                return JSONLogHandler(label: label, level: level)
            case .text:
                var handler = StreamLogHandler.standardError(label: label)
                handler.logLevel = level
                return handler
            }
        }
        let logger = Logger(label: "portcullis")
        do {
            try await GatewayServer.run(configuration: configuration, logger: logger)
        } catch let errors as ConfigErrors {
            throw options.fail(errors)
        } catch {
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
        } catch {
            throw options.fail(error)
        }
        print("\(options.config): ok (\(configuration.routes.count) routes, \(configuration.upstreams.count) upstreams, \(configuration.issuers.count) issuers)")
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
