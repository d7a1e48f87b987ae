import CRM
import Foundation
import ReplicaStore
import SyncProtocol

/// The device's number in its tenant (SPEC.md 2.3), which the registry gives it at enrollment:
/// the CRM puts it in the case numbers the device makes offline (`C7-0042`, see `CaseNumbers`).
/// It is kept in the replica store, like the rights (`DeviceAccess.swift`), so the CRM reads it
/// offline from the store it writes cases to, whatever app embeds the client.
extension RapportClient {
    /// Keeps the device number a server sent (in Enrolled or Welcome) in the store's local
    /// setting `CaseNumbers.deviceNumberSetting`, as decimal text in UTF-8 (`"7"`). `nil` or 0
    /// (a server that does not number devices) keeps whatever was kept before: a number, once
    /// given, is the device's for good, and forgetting it would change the prefix of the cases
    /// the device opens next.
    ///
    /// An app that enrolls with `enroll(configuration:code:deviceName:)` calls this with
    /// `Enrollment.deviceNumber` once it has created the device's store; every sync repeats it
    /// from Welcome.
    public static func keepDeviceNumber(_ number: UInt32?, on store: ReplicaStore) throws {
        guard let number, number > 0 else { return }
        let text = Data(String(number).utf8)
        // The usual case, the same number as last time, costs no write.
        if try store.localSetting(CaseNumbers.deviceNumberSetting) != text {
            try store.setLocalSetting(CaseNumbers.deviceNumberSetting, text)
        }
    }

    /// Takes what a Welcome tells the device about itself, before anything is pushed: its
    /// user's rights and its number, in one visit to the store's queue.
    func adopt(_ welcome: Rapport_V1_Welcome) async throws {
        try await store.perform { store in
            try Self.adoptAccess(welcome.hasAccess ? welcome.access : nil, on: store)
            try Self.keepDeviceNumber(welcome.deviceNumber, on: store)
        }
    }
}
