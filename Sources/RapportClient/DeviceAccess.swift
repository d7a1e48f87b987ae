import Access
import CRM
import Foundation
import ReplicaStore
import SyncProtocol

/// A device checks its own writes against its user's rights, with the check the server runs
/// (`AccessPolicy` over `CRMAccess.ownership`), so an app shows a refusal the moment the user
/// makes the change rather than after the next sync. The server still checks every record it is
/// pushed; a device that skips this is refused there.
///
/// The rights come in `Welcome.access` on every session. The device keeps the last ones it got
/// in its replica store (a local setting, as the `Rapport_V1_Access` message's bytes) rather than
/// in a file beside it: an app that embeds `RapportClient` has a store but no home directory of
/// ours, the setting is written atomically with SQLite, and it travels with the replica whose
/// writes it governs (a backup, a copy). So a device that starts offline checks from its first
/// write, with the rights its user had when it was last connected.
extension RapportClient {
    /// The local setting the device's rights are kept under.
    static let accessSetting = "access"

    /// Takes the rights the server gave in a Welcome: keeps them and checks every later local
    /// write of the store with them. `nil` (a server that sent none: an older one, or one that
    /// applies no rights) forgets any kept before, so the device checks nothing itself, as the
    /// server then does not either.
    public func adoptAccess(_ access: Rapport_V1_Access?) async throws {
        try await store.perform { try Self.adoptAccess(access, on: $0) }
    }

    /// The rights local writes are checked against now, `nil` when none are known: for an app
    /// that hides what its user may not do.
    public func access() async throws -> AccessSubject? {
        try await store.perform { ($0.localWriteCheck as? AccessPolicy)?.subject }
    }

    /// `adoptAccess(_:)` on a store the caller holds on its queue.
    public static func adoptAccess(_ access: Rapport_V1_Access?, on store: ReplicaStore) throws {
        let subject = access.flatMap(AccessSubject.init)
        let bytes: Data? = try subject.map { try $0.wire.serializedBytes() }
        // Unchanged rights, the usual case, cost no write.
        if try store.localSetting(accessSetting) != bytes {
            try store.setLocalSetting(accessSetting, bytes)
        }
        store.localWriteCheck = subject.map(policy)
    }

    /// Checks the store's local writes with the rights it kept from its last session, if any:
    /// what a device does when it opens its store, connected or not.
    ///
    /// - Throws: `ReplicaStoreError.corrupt` when the kept rights do not decode; only this code
    ///   writes them, so the file was damaged.
    @discardableResult
    public static func installSavedAccessCheck(on store: ReplicaStore) throws -> AccessSubject? {
        guard let bytes = try store.localSetting(accessSetting) else {
            store.localWriteCheck = nil
            return nil
        }
        let subject: AccessSubject?
        do {
            subject = AccessSubject(try Rapport_V1_Access(serializedBytes: bytes))
        } catch {
            throw ReplicaStoreError.corrupt(path: store.path, reason: "the user's rights kept in local setting '\(accessSetting)' do not decode: \(error)")
        }
        store.localWriteCheck = subject.map(policy)
        return subject
    }

    private static func policy(_ subject: AccessSubject) -> AccessPolicy {
        AccessPolicy(model: CRMAccess.ownership, subject: subject)
    }
}
