import Foundation
import PrivateFiles

/// The process's file-creation mask, for tests that prove modes do not depend on it.
public enum FileModes {
    /// Runs `body` with `mask` as the umask (inherited by child processes started in it), then
    /// restores the previous one. The umask is process-wide: only code whose modes are exact
    /// whatever the umask should run beside such a test.
    public static func withUmask<T>(_ mask: mode_t, _ body: () async throws -> T) async rethrows -> T {
        let previous = umask(mask)
        defer { umask(previous) }
        return try await body()
    }

    /// Every file and folder at or below `root` that is not exactly owner-only (0700 for
    /// folders, 0600 for files).
    public static func notOwnerOnly(under root: String) -> [PrivateFiles.Entry] {
        PrivateFiles.entries(under: root).filter { $0.mode != ($0.isDirectory ? PrivateFiles.directoryMode : PrivateFiles.fileMode) }
    }
}
