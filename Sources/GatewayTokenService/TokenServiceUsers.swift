import GatewayConfig
import GatewaySessions

/// Loads the token service's users file, reporting problems at `token_service.users_file`.
public enum TokenServiceUsers {
    public static func load(_ service: TokenService) throws(ConfigErrors) -> UsersFile? {
        guard let path = service.usersFile else { return nil }
        let bytes: [UInt8]
        do {
            bytes = try GatewayConfiguration.readReferencedFile(path)
        } catch {
            throw ConfigErrors([ConfigError(.unreadableFile, path: "token_service.users_file", error.message)])
        }
        do {
            return try UsersFile.parse(bytes)
        } catch {
            throw ConfigErrors([ConfigError(.invalidValue, path: "token_service.users_file", "\(path): \(error)")])
        }
    }
}
