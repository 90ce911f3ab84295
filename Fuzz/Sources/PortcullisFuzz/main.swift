import Glibc

// SwiftPM renames an executable's entry point to `PortcullisFuzz_main` and points `main` at it; whether that or
// libFuzzer's own `main` (FuzzerMain.o, which the sanitizer runtime pulls in) ends up as the entry point depends on
// the linker. Both paths end in libFuzzer's driver, which calls `LLVMFuzzerInitialize` (target selection) and then
// `LLVMFuzzerTestOneInput`, both in Entry.swift.
@_silgen_name("LLVMFuzzerRunDriver")
func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

// Two variables: inout access to two members of one tuple at once would break exclusivity.
var argumentCount = CommandLine.argc
var argumentValues = CommandLine.unsafeArgv
exit(LLVMFuzzerRunDriver(&argumentCount, &argumentValues) { fuzzTestOneInput($0, $1) })
