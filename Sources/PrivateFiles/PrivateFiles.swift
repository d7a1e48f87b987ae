#if canImport(Glibc)
import Glibc
#else
import Darwin
#endif

/// Folders (0700) and files (0600) only their owner can read, whatever the process umask.
///
/// Everything Rapport writes holds something private: tenant data, e-mail addresses, the audit
/// log, secret hashes, keys, enrollment codes. Every layer that creates a file or folder goes
/// through here (SQLite databases, and through their mode their -wal, -shm and journals, too),
/// so the rule is kept in one place. Modes are set with `fchmod`/`chmod` after creation because
/// the umask can only narrow a mode, and a caller's umask of 0277 would make 0400 files.
public enum PrivateFiles {
    /// Owner read, write and search.
    public static let directoryMode: mode_t = 0o700
    /// Owner read and write.
    public static let fileMode: mode_t = 0o600
    /// The bits that give group or others any access.
    public static let groupOrOtherBits: mode_t = 0o077

    /// Creates `path` and any missing parent as owner-only folders. Folders that exist already
    /// are left as they are: they may be the operator's (a home, `/tmp`).
    public static func createDirectory(_ path: String) throws(PrivateFileError) {
        var missing: [String] = []
        var current = path
        while !current.isEmpty, current != "/", !exists(current) {
            missing.append(current)
            current = parent(of: current)
        }
        for folder in missing.reversed() {
            if mkdir(folder, directoryMode) != 0 {
                // Another process may have made it meanwhile; then it is theirs to keep.
                if errno == EEXIST { continue }
                throw PrivateFileError("cannot create the folder", path: folder)
            }
            guard chmod(folder, directoryMode) == 0 else { throw PrivateFileError("cannot set the mode of", path: folder) }
        }
        guard isDirectory(path) else { throw PrivateFileError("not a folder:", path: path, errno: ENOTDIR) }
    }

    /// Creates an empty owner-only file at `path` unless something is there already; returns
    /// whether it did. Used before a library (SQLite) creates the file with its own mode.
    @discardableResult
    public static func createFileIfMissing(_ path: String) throws(PrivateFileError) -> Bool {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, fileMode)
        if fd < 0 {
            if errno == EEXIST { return false }
            throw PrivateFileError("cannot create", path: path)
        }
        defer { close(fd) }
        guard fchmod(fd, fileMode) == 0 else { throw PrivateFileError("cannot set the mode of", path: path) }
        return true
    }

    /// Writes `bytes` to an owner-only temporary file beside `path`, syncs it and renames it over
    /// `path`: a reader never sees half a file, and the content is never readable by others,
    /// not even for a moment.
    public static func write(_ bytes: some Collection<UInt8>, to path: String) throws(PrivateFileError) {
        let temporary = path + ".tmp-\(getpid())"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, fileMode)
        guard fd >= 0 else { throw PrivateFileError("cannot create", path: temporary) }
        var failure: PrivateFileError?
        if fchmod(fd, fileMode) != 0 { failure = PrivateFileError("cannot set the mode of", path: temporary) }
        var remaining = Array(bytes)[...]
        while failure == nil, !remaining.isEmpty {
            let written = remaining.withUnsafeBytes { systemWrite(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = PrivateFileError("cannot write", path: temporary)
            } else {
                remaining = remaining.dropFirst(written)
            }
        }
        if failure == nil, fsync(fd) != 0 { failure = PrivateFileError("cannot sync", path: temporary) }
        close(fd)
        if failure == nil, rename(temporary, path) != 0 { failure = PrivateFileError("cannot rename \(temporary) to", path: path) }
        if let failure {
            unlink(temporary)
            throw failure
        }
    }

    /// Writes `text` as UTF-8; see `write(_:to:)`.
    public static func write(_ text: String, to path: String) throws(PrivateFileError) {
        try write(Array(text.utf8), to: path)
    }

    /// A file or folder with its permission bits.
    public struct Entry: Sendable, Equatable, CustomStringConvertible {
        public var path: String
        public var mode: mode_t
        public var isDirectory: Bool

        /// Whether group or others have any access.
        public var isLoose: Bool { mode & groupOrOtherBits != 0 }

        public var description: String { "\(path) (\(String(mode, radix: 8)))" }
    }

    /// Every file and folder at or below `root`, sorted by path. Symbolic links are neither
    /// followed nor listed (their own mode means nothing), nor are sockets and the like.
    public static func entries(under root: String) -> [Entry] {
        var found: [Entry] = []
        var pending = [root]
        while let path = pending.popLast() {
            var info = stat()
            guard lstat(path, &info) == 0 else { continue }
            let kind = info.st_mode & S_IFMT
            guard kind == S_IFDIR || kind == S_IFREG else { continue }
            found.append(Entry(path: path, mode: info.st_mode & 0o7777, isDirectory: kind == S_IFDIR))
            if kind == S_IFDIR { pending += children(of: path).map { path + "/" + $0 } }
        }
        return found.sorted { $0.path < $1.path }
    }

    /// Takes group and other access away from `entry`, keeping the owner's bits.
    public static func tighten(_ entry: Entry) throws(PrivateFileError) {
        guard chmod(entry.path, entry.mode & ~groupOrOtherBits) == 0 else {
            throw PrivateFileError("cannot set the mode of", path: entry.path)
        }
    }

    /// The permission bits of `path` (following links), or `nil` when it does not exist.
    public static func mode(of path: String) -> mode_t? {
        var info = stat()
        guard stat(path, &info) == 0 else { return nil }
        return info.st_mode & 0o7777
    }

    // MARK: Helpers

    private static func exists(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0
    }

    private static func isDirectory(_ path: String) -> Bool {
        var info = stat()
        return stat(path, &info) == 0 && info.st_mode & S_IFMT == S_IFDIR
    }

    private static func parent(of path: String) -> String {
        var trimmed = Substring(path)
        while trimmed.count > 1, trimmed.hasSuffix("/") { trimmed = trimmed.dropLast() }
        guard let slash = trimmed.lastIndex(of: "/") else { return "" }
        return slash == trimmed.startIndex ? "/" : String(trimmed[..<slash])
    }

    private static func children(of path: String) -> [String] {
        guard let dir = opendir(path) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix { $0 != 0 }, as: UTF8.self)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }
}

/// A file or folder that could not be created or written, with the path and the system's reason.
public struct PrivateFileError: Error, Sendable, Equatable, CustomStringConvertible {
    public var operation: String
    public var path: String
    /// The `errno` of the failing call.
    public var code: Int32

    public init(_ operation: String, path: String, errno code: Int32 = errno) {
        self.operation = operation
        self.path = path
        self.code = code
    }

    /// True when the disk or the user's quota is full.
    public var isStorageFull: Bool { code == ENOSPC || code == EDQUOT }

    public var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}

/// `write(2)`, named apart from `PrivateFiles.write` and from the Glibc/Darwin module split.
private func systemWrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    #if canImport(Glibc)
    Glibc.write(fd, buffer, count)
    #else
    Darwin.write(fd, buffer, count)
    #endif
}
