import Glibc

/// libFuzzer calls this once before the first input. It picks the target from `--target=NAME` (libFuzzer ignores
/// arguments that start with "--", and passes them on to the processes it forks with -fork/-jobs) or
/// PORTCULLIS_FUZZ_TARGET, and builds its fixtures, so that no input pays for them.
@_cdecl("LLVMFuzzerInitialize")
func fuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>
) -> CInt {
    var requested = getenv("PORTCULLIS_FUZZ_TARGET").map { String(cString: $0) }
    for i in 1..<Int(argc.pointee) {
        guard let raw = argv.pointee[i] else { continue }
        let argument = String(cString: raw)
        if argument == "--list" {
            for target in FuzzTargets.all { print("\(target.name)\t\(target.summary)") }
            exit(0)
        }
        if argument.hasPrefix("--write-seeds=") {
            SeedWriter.write(to: String(argument.dropFirst("--write-seeds=".count)))
            exit(0)
        }
        if argument.hasPrefix("--target=") { requested = String(argument.dropFirst("--target=".count)) }
    }
    guard let name = requested, let target = FuzzTargets.all.first(where: { $0.name == name }) else {
        printError("usage: PortcullisFuzz --target=NAME [libFuzzer flags] [corpus dirs or files]; --list names the targets")
        exit(2)
    }
    target.setUp()
    FuzzTargets.selected = target
    return 0
}

@_cdecl("LLVMFuzzerTestOneInput")
func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    FuzzTargets.selected!.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}
