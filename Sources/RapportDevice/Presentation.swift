import Foundation
import RapportClient
import ReplicaStore
import SyncModel

/// How the commands show records, conflicts, syncs and the device: a text form for a terminal
/// and a JSON form for scripts, both pure functions of the data so tests can check them.
///
/// The JSON forms are the stable interface; the text forms may change to read better.
public enum Presentation {
    // MARK: Values

    /// A value as a table cell: nulls are blank so that tables stay quiet.
    public static func cell(_ value: FieldValue?) -> String {
        switch value {
        case nil, .null?: ""
        case .blob(let data)?: "<\(data.count) bytes>"
        case let value?: value.description
        }
    }

    /// A value in JSON: blobs as base64, the only text form JSON has for bytes.
    public static func json(_ value: FieldValue) -> JSONValue {
        switch value {
        case .null: .null
        case .bool(let v): .bool(v)
        case .integer(let v): .integer(v)
        case .real(let v): .number(v)
        case .text(let v): .string(v)
        case .blob(let v): .string(v.base64EncodedString())
        }
    }

    static func iso8601(milliseconds: UInt64) -> String {
        Date(timeIntervalSince1970: Double(milliseconds) / 1000).formatted(.iso8601)
    }

    // MARK: Records

    /// `{"id", "type", "deleted", "fields": {...}}`, fields sorted by name; counters as their totals.
    public static func json(_ state: RecordState, openConflicts: Int? = nil) -> JSONValue {
        var members: [JSONValue.Member] = [
            .init("id", .string(Device.text(state.id))),
            .init("type", .string(state.type)),
            .init("deleted", .bool(state.isDeleted)),
            .init("fields", .object(sorted: state.values.mapValues(json))),
        ]
        if let openConflicts { members.append(.init("open_conflicts", .integer(Int64(openConflicts)))) }
        return .members(members)
    }

    /// One record as `field  value` lines under a heading line.
    public static func text(_ state: RecordState, openConflicts: Int = 0, width: Int) -> String {
        var heading = "\(state.type) \(Device.text(state.id))"
        if state.isDeleted { heading += "  (deleted; 'rapport restore' brings it back)" }
        if openConflicts > 0 { heading += "  [\(openConflicts) open conflict\(openConflicts == 1 ? "" : "s")]" }
        let rows = state.values.sorted { $0.key < $1.key }.map { [$0.key, $0.value == .null ? "null" : cell($0.value)] }
        let table = TextTable(columns: [.init("field", shrinkable: false), .init("value")], rows: rows, showsHeader: false)
        return heading + "\n" + table.render(width: width)
    }

    /// Fields people look for first in a list; the rest follow alphabetically.
    static let leadingFields = ["name", "first_name", "last_name", "subject", "kind", "title"]

    /// The columns `list` shows by default: the fields that hold a value in any listed record
    /// (a CRM type has a dozen fields, most of them empty on most records).
    public static func defaultColumns(for states: [RecordState]) -> [String] {
        var used = Set<String>()
        for state in states {
            for (name, value) in state.values where value != .null { used.insert(name) }
        }
        let leading = leadingFields.filter(used.contains)
        return leading + used.subtracting(leading).sorted()
    }

    /// Records as a table: the id (never truncated, people copy it), then `fields`.
    public static func table(_ states: [RecordState], fields: [String]? = nil, showDeleted: Bool = false, width: Int) -> String {
        let fields = fields ?? defaultColumns(for: states)
        var columns: [TextTable.Column] = [.init("id", shrinkable: false)]
        if showDeleted { columns.append(.init("deleted", shrinkable: false)) }
        columns += fields.map { .init($0) }
        let rows = states.map { state in
            [Device.text(state.id)] + (showDeleted ? [state.isDeleted ? "yes" : ""] : []) + fields.map { cell(state.values[$0]) }
        }
        return TextTable(columns: columns, rows: rows).render(width: width)
    }

    // MARK: Conflicts

    /// One side of a conflict as a person reads it: the value, or what happened to the record.
    public static func text(_ side: ConflictSide, kind: ConflictKind) -> String {
        if side.isDeletion { return "(deleted)" }
        if kind == .deleteVersusRestore { return "(restored)" }
        if kind == .rejected { return "(local change)" }
        return side.value.map { $0 == .null ? "null" : cell($0) } ?? ""
    }

    /// `{"value", "deleted", "replica", "counter", "written_at"}`: the value and the write that made it.
    public static func json(_ side: ConflictSide) -> JSONValue {
        .object([
            "value": side.value.map(json) ?? .null,
            "deleted": .bool(side.isDeletion),
            "replica": .string(side.dot.replica.rawValue),
            "counter": .integer(Int64(clamping: side.dot.counter)),
            "written_at": .string(iso8601(milliseconds: side.timestamp.wallMilliseconds)),
        ])
    }

    /// A conflict log entry with both sides, its status and, when closed, how.
    public static func json(_ entry: ConflictEntry) -> JSONValue {
        .object([
            "id": .integer(entry.id),
            "kind": .string(entry.conflict.kind.rawValue),
            "record": .string(Device.text(entry.conflict.recordID)),
            "type": .string(entry.conflict.recordType),
            "field": .optional(entry.conflict.field),
            "winner": json(entry.conflict.winner),
            "loser": json(entry.conflict.loser),
            "status": .string(entry.status.rawValue),
            "resolution": .optional(entry.resolution),
            "reason": .optional(entry.reason),
            "detected_at": .string(iso8601(milliseconds: entry.detectedAt)),
        ])
    }

    /// The conflict log as a table; the reason column appears only when an entry has one.
    public static func table(_ entries: [ConflictEntry], width: Int) -> String {
        let withReason = entries.contains { $0.reason != nil }
        var columns: [TextTable.Column] = [
            .init("id", shrinkable: false, alignRight: true), .init("kind"), .init("record", shrinkable: false),
            .init("field"), .init("winner"), .init("loser"), .init("status", shrinkable: false),
        ]
        if withReason { columns.append(.init("reason")) }
        let rows = entries.map { entry in
            let conflict = entry.conflict
            var row = [
                String(entry.id), conflict.kind.rawValue, Device.text(conflict.recordID),
                conflict.field ?? "(existence)",
                text(conflict.winner, kind: conflict.kind), text(conflict.loser, kind: conflict.kind),
                entry.status.rawValue,
            ]
            if withReason { row.append(entry.reason ?? "") }
            return row
        }
        return TextTable(columns: columns, rows: rows).render(width: width)
    }

    // MARK: Sync and status

    /// `sync --json`: the report's counts plus the conflicts left open after it.
    public static func json(_ report: SyncReport, openConflicts: Int) -> JSONValue {
        .object([
            "pushed": .integer(Int64(report.pushed)),
            "pulled": .integer(Int64(report.pulled)),
            "rejected": .integer(Int64(report.rejected)),
            "evicted": .integer(Int64(report.evicted)),
            "dropped": .integer(Int64(report.dropped)),
            "conflicts": .integer(Int64(report.conflicts)),
            "open_conflicts": .integer(Int64(openConflicts)),
            "checkpoint": .integer(report.checkpoint),
            "attempts": .integer(Int64(report.attempts)),
        ])
    }

    /// The sync summary, with a pointer to `conflicts` when something needs a decision.
    public static func text(_ report: SyncReport, server: ServerAddress, openConflicts: Int) -> String {
        var text = "synced with \(server): pushed \(report.pushed), pulled \(report.pulled), "
            + "rejected \(report.rejected), conflicts \(report.conflicts)\n"
        if report.rejected > 0 {
            text += "the server rejected \(report.rejected) change\(report.rejected == 1 ? "" : "s"): see 'rapport conflicts'\n"
        }
        if report.evicted > 0 {
            text += "\(report.evicted) record\(report.evicted == 1 ? "" : "s") left this device: no longer visible to its user (not deleted)\n"
        }
        if report.dropped > 0 {
            text += "resynced: \(report.dropped) record\(report.dropped == 1 ? "" : "s") the server no longer has left this device (deleted long ago elsewhere, or out of view)\n"
        }
        if openConflicts > 0 {
            text += "\(openConflicts) open conflict\(openConflicts == 1 ? "" : "s"): see 'rapport conflicts', settle with 'rapport resolve'\n"
        }
        return text
    }

    static func trust(_ profile: DeviceProfile) -> String {
        var parts: [String] = []
        parts.append(profile.caFile.map { "CA \($0)" } ?? "system CAs")
        if let pin = profile.pin { parts.append("key pin \(pin)") }
        return parts.joined(separator: " + ")
    }

    /// `status --json`; never includes the secret.
    public static func json(_ status: Device.Status) -> JSONValue {
        let profile = status.profile
        return .object([
            "device_id": .string(profile.deviceID),
            "device_number": .optional(status.deviceNumber),
            "user": .optional(status.user),
            "home": .string(status.home),
            "server": .string(profile.server.description),
            "server_name": .string(profile.serverName),
            "tenant": .string(profile.tenant),
            "ca_file": .optional(profile.caFile),
            "pin": .optional(profile.pin),
            "schema_version": .integer(Int64(profile.schemaVersion)),
            "records": .object(sorted: status.recordCounts.mapValues { .integer(Int64($0)) }),
            "dirty": .integer(Int64(status.dirtyCount)),
            "open_conflicts": .integer(Int64(status.openConflicts)),
            "last_sync": .optional(status.lastSync?.lastSyncAt),
            "checkpoint": status.lastSync.map { .integer($0.checkpoint) } ?? .null,
        ])
    }

    /// `status` as `key  value` lines.
    public static func text(_ status: Device.Status, width: Int) -> String {
        let profile = status.profile
        let records = status.recordCounts.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }.joined(separator: ", ")
        let lastSync = status.lastSync.map { "\($0.lastSyncAt), checkpoint \($0.checkpoint)" } ?? "never"
        let rows = [
            ["device", profile.deviceID + (status.deviceNumber.map { " (number \($0) in its tenant)" } ?? "")],
            ["user", status.user ?? "not known yet (sync once)"],
            ["home", status.home],
            ["server", profile.server.description + (profile.serverName == profile.host ? "" : " (certificate name \(profile.serverName))")],
            ["tenant", profile.tenant],
            ["trust", trust(profile)],
            ["records", records],
            ["unsynced", "\(status.dirtyCount) record\(status.dirtyCount == 1 ? "" : "s")"],
            ["conflicts", "\(status.openConflicts) open"],
            ["last sync", lastSync],
        ]
        return TextTable(columns: [.init("key", shrinkable: false), .init("value")], rows: rows, showsHeader: false)
            .render(width: width)
    }

    /// `init`'s output.
    public static func json(_ profile: DeviceProfile, home: DeviceHome) -> JSONValue {
        .object([
            "device_id": .string(profile.deviceID),
            "home": .string(home.path),
            "server": .string(profile.server.description),
            "server_name": .string(profile.serverName),
            "tenant": .string(profile.tenant),
            "ca_file": .optional(profile.caFile),
            "pin": .optional(profile.pin),
        ])
    }
}
