#if canImport(Glibc)
    import Glibc
#endif

/// Writes the files of the signing-key directory so that a private key is never readable by anyone but the owner,
/// not even for a moment, and survives a crash once written.
///
/// `FileManager.createFile(atPath:contents:attributes:)` wrote a temporary file with the umask's mode (0644 under
/// the usual 022), renamed it into place and only then applied 0600: in between, the private key was world-readable
/// in a folder that, when it already existed, could be readable too. Here the file is created by `open` with
/// `O_CREAT|O_EXCL` and mode 0600 before a byte of it exists (never following a symlink, never replacing a file),
/// written, `fsync`ed and closed; folders are created 0700.
enum SecretFiles {
    /// Creates `directory` and its missing parents with mode 0700; existing folders are left as they are.
    static func createDirectory(_ directory: String) throws(SigningKeyStore.StoreError) {
        if let failed = createFolders(directory) {
            errno = failed.errno
            throw failure("cannot create the folder \(failed.folder)")
        }
    }

    /// Creates `directory` and its missing parents with mode 0700 (the signing-key folder, the SQLite store's
    /// folder); existing folders are left as they are. Returns the folder that could not be created and why.
    static func createFolders(_ directory: some StringProtocol) -> (folder: String, errno: Int32)? {
        var prefix = directory.hasPrefix("/") ? "/" : ""
        for component in directory.split(separator: "/") {
            prefix += component
            if mkdir(prefix, 0o700) == 0 {
                _ = chmod(prefix, 0o700)  // the umask may have narrowed it; never wider than 0700
            } else if errno != EEXIST {
                return (prefix, errno)
            }
            prefix += "/"
        }
        return nil
    }

    /// Creates `path` (which must not exist) with mode 0600 and writes `bytes` to it, durably. `afterCreate` sees
    /// the descriptor before anything is written (tests check the mode there).
    static func writeNew(
        _ path: String, _ bytes: [UInt8], afterCreate: ((Int32) -> Void)? = nil
    ) throws(SigningKeyStore.StoreError) {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw failure("cannot create \(path)") }
        afterCreate?(fd)
        // The umask can only have narrowed 0600; make it exactly owner read-write.
        guard fchmod(fd, 0o600) == 0, writeAll(fd, bytes), fsync(fd) == 0 else {
            let error = failure("cannot write \(path)")
            _ = close(fd)
            _ = unlink(path)  // never leave a half-written key behind
            throw error
        }
        guard close(fd) == 0 else {
            let error = failure("cannot write \(path)")
            _ = unlink(path)
            throw error
        }
    }

    /// Replaces `path` with a file of `bytes` (0600) atomically: written beside it, then renamed over it, and the
    /// folder synced so the rename itself survives a crash.
    static func replace(_ path: String, _ bytes: [UInt8]) throws(SigningKeyStore.StoreError) {
        let temporary = "\(path).tmp"
        _ = unlink(temporary)  // left over from a crash
        try writeNew(temporary, bytes)
        guard rename(temporary, path) == 0 else {
            let error = failure("cannot replace \(path)")
            _ = unlink(temporary)
            throw error
        }
        syncFolder(of: path)
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 {
                    offset += n
                } else if !(n < 0 && errno == EINTR) {
                    return false
                }
            }
            return true
        }
    }

    private static func syncFolder(of path: String) {
        let folder = path.lastIndex(of: "/").map { String(path[..<$0]) } ?? "."
        let fd = open(folder.isEmpty ? "/" : folder, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { return }
        _ = fsync(fd)
        _ = close(fd)
    }

    private static func failure(_ message: String) -> SigningKeyStore.StoreError {
        SigningKeyStore.StoreError(.io, message: "\(message): \(String(cString: strerror(errno)))")
    }
}
