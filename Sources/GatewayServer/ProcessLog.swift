import GatewayConfig
import GatewayProxy
import Logging

/// The process's logging: every handler writes through `LogOutput.standardError`, whose writer thread is the only
/// place that blocks on standard error, so a stalled log pipe never stalls an event loop.
public enum ProcessLog {
    /// Installs the swift-log handlers for `log.level` and `log.format` (once per process).
    public static func bootstrap(level: Logger.Level, format: Log.Format) {
        let output = LogOutput.standardError
        output.setStyle(format == .json ? .json : .text)
        LoggingSystem.bootstrap { label in
            switch format {
            case .json:
                return JSONLogHandler(label: label, level: level, output: output)
            case .text:
                var handler = StreamLogHandler(label: label, stream: output.textStream)
                handler.logLevel = level
                return handler
            }
        }
    }

    /// Waits (up to `timeout`) until the queued lines are written, before the process exits.
    public static func drain(timeout: Duration = .seconds(2)) {
        LogOutput.standardError.drain(timeout: timeout)
    }
}
