import CRM
import Foundation
import ReplicaStore
import SyncModel

/// The CRM verbs of `rapport` (account, lead, opportunity, case, log, tasks, report) work on the
/// device's local store through `CRMStore`, as an app does; this is what they share.
extension Device {
    /// Runs `body` with the CRM's typed operations on the local store, acting as the device's
    /// user, turning whatever it throws into a classified `DeviceError`.
    public func crm<T>(_ body: (CRMStore) throws -> T) throws(DeviceError) -> T {
        let user = self.user
        return try withStore { try body(CRMStore(store: $0, user: user)) }
    }

    /// The device's user, for the verbs that act as them (their tasks, what they log).
    ///
    /// - Throws: `.usage` for a device made with a secret that has not synced yet, which is
    ///   when it learns whose it is.
    public func requireUser() throws(DeviceError) -> String {
        guard let user else {
            throw .usage("this device does not know its user yet: run 'rapport sync' once (devices made with 'rapport init --enroll' know it at once)")
        }
        return user
    }

    /// The id of the live record of `type` that a command line names: by id, or for a case by
    /// its number too.
    ///
    /// - Throws: `.notFound` when this device holds no such record (or it is deleted), `.usage`
    ///   when the id names a record of another type or is neither an id nor a case number.
    public func resolve(_ text: String, as type: String) throws(DeviceError) -> UUID {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        guard let id = UUID(uuidString: trimmed) else {
            // Throws the usual "not a record id" for anything but a case.
            guard type == ServiceCase.recordType else { return try Self.recordID(text) }
            guard let id = try crm({ try $0.caseID(forNumber: trimmed) }) else {
                throw .notFound("no case with id or number '\(trimmed.prefix(60))' on this device")
            }
            return id
        }
        guard let record = try withStore({ try $0.record(id) }) else {
            throw .notFound("no \(type) \(Self.text(id)) on this device")
        }
        guard record.type == type else {
            throw .usage("record \(Self.text(id)) is \(Self.article(record.type)) \(record.type), not \(Self.article(type)) \(type)")
        }
        guard !record.isDeleted else {
            throw .notFound("\(type) \(Self.text(id)) is deleted ('rapport restore \(Self.text(id))' brings it back)")
        }
        return id
    }

    /// The record `id` as the store holds it now, for showing after a write.
    public func current(_ id: UUID) throws(DeviceError) -> RecordState {
        guard let record = try withStore({ try $0.record(id) }) else { throw .notFound("no record \(Self.text(id)) on this device") }
        return record
    }

    /// A CRM report by its name, as `rapportctl report` names them.
    ///
    /// - Throws: `.usage` listing the reports for a name that is not one.
    public static func report(named name: String) throws(DeviceError) -> CRMReport {
        guard let report = CRMReport(rawValue: name) else {
            throw .usage("unknown report '\(name.prefix(60))'; the reports are: \(CRMReport.allCases.map(\.rawValue).joined(separator: ", "))")
        }
        return report
    }

    /// Runs a report on the local data as of `now`: its text in `format`, and the tenant
    /// settings that do not parse (their defaults were used), for a warning beside it.
    public func run(_ report: CRMReport, as format: ReportFormat, now: Date = Date()) throws(DeviceError)
        -> (output: String, problems: [SettingProblem])
    {
        try withStore { store in
            let reports = try CRMReports(store: store, now: now)
            return (try reports.render(report, as: format), reports.settingProblems)
        }
    }

    static func article(_ type: String) -> String { "aeiou".contains(type.first ?? "x") ? "an" : "a" }
}
