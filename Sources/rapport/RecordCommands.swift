import ArgumentParser
import RapportDevice
import SyncModel

struct Put: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Create a record, or update one, from field=value arguments.",
        discussion: """
            Without an ID, creates a record of TYPE and prints its new id. With the ID of an \
            existing record of TYPE, updates it and prints the id again. --json prints the \
            whole record instead.

            Values are read by the field's kind: text as given; integer (e.g. 42); real \
            (e.g. 12.5, 1e6); boolean (true/false, yes/no, 1/0); blob (base64). 'field=' or \
            'field=null' clears a field (so a text field cannot hold the word "null" from here).

            Counter fields (such as an account's loyalty_points) add up across devices and are \
            changed by an amount, never set: 'loyalty_points+=10', 'loyalty_points-=3'.

            An unknown type or field, or a value that does not fit its field, is reported with \
            the field's name, exits 1 and writes nothing.

            Types and fields: 'rapport put TYPE' with a wrong name lists them.

            Example: rapport put contact first_name=Ada last_name=Lovelace do_not_call=no
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The record type ('rapport types' lists them).")
    var type: String

    @Argument(help: ArgumentHelp("An optional record id to update, then field=value, field+=N or field-=N.",
                                 valueName: "id | field=value"))
    var arguments: [String] = []

    func run() throws {
        // An id is recognisable (a UUID, never containing '='), so it needs no option of its own.
        var assignments = arguments
        var id: String?
        if let first = assignments.first, !first.contains("=") {
            id = first
            assignments.removeFirst()
        }
        let result = try device.withDevice { try $0.put(type: type, id: id, assignments: assignments) }
        output.emit(text: Device.text(result.record.id) + "\n", json: Presentation.json(result.record))
    }
}

struct Get: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a record of any type, deleted or not.",
        discussion: "Exits 2 when there is no such record on this device.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The record id.")
    var id: String

    func run() throws {
        let (record, open) = try device.withDevice { device in
            let record = try device.record(id)
            return (record, try device.openConflictCount(on: record.id))
        }
        output.emit(text: Presentation.text(record, openConflicts: open, width: Output.width),
                    json: Presentation.json(record, openConflicts: open))
    }
}

struct List: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the records of a type, least recently changed first.",
        discussion: """
            The table shows the id and every field that holds a value in some listed record, \
            cut to the terminal width ($COLUMNS, else 100); --fields picks the columns. \
            --json prints every record whole.

            --where field=value (repeatable) keeps the live records whose field holds the value \
            (read like a 'put' value; 'field=' for unset ones; record ids in any case); \
            --limit N keeps the first N.

            Example: rapport list opportunity --where stage=proposal --where owner=ana@acme.example
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The record type.")
    var type: String

    @Flag(help: "Include deleted records.")
    var deleted = false

    @Option(help: ArgumentHelp("Columns to show, comma-separated.", valueName: "field,..."))
    var fields: String?

    @Option(name: .customLong("where"), help: ArgumentHelp("Only records whose field holds the value.", valueName: "field=value"))
    var conditions: [String] = []

    @Option(help: ArgumentHelp("At most this many records.", valueName: "n"))
    var limit: Int?

    func validate() throws {
        if let limit, limit < 0 { throw ValidationError("--limit must be at least 0") }
    }

    func run() throws {
        let records = try device.withDevice { device in
            let records = try device.list(type: type, includeDeleted: deleted, where: conditions, limit: limit)
            if let fields {
                let recordType = try ValueParser.recordType(type, in: device.schema)
                for field in fields.split(separator: ",") {
                    _ = try ValueParser.kind(of: String(field), in: recordType)
                }
            }
            return records
        }
        let columns = fields.map { $0.split(separator: ",").map(String.init) }
        let text = records.isEmpty
            ? (conditions.isEmpty ? "no \(deleted ? "" : "live ")\(type) records\n" : "no \(type) records match\n")
            : Presentation.table(records, fields: columns, showDeleted: deleted, width: Output.width)
        output.emit(text: text, json: .array(records.map { Presentation.json($0) }))
    }
}

struct Delete: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Delete a record.",
        discussion: """
            The record stays as a tombstone: the deletion syncs, and 'rapport restore' brings \
            the record back with its values. An edit made elsewhere at the same time is kept \
            as a conflict.
            """)

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The record id.")
    var id: String

    func run() throws {
        let record = try device.withDevice { try $0.delete(id) }
        output.emit(text: "deleted \(record.type) \(Device.text(record.id))\n", json: Presentation.json(record))
    }
}

struct Restore: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Bring a deleted record back, with the values it held.")

    @OptionGroup var device: DeviceOptions
    @OptionGroup var output: OutputOptions

    @Argument(help: "The record id.")
    var id: String

    func run() throws {
        let record = try device.withDevice { try $0.restore(id) }
        output.emit(text: "restored \(record.type) \(Device.text(record.id))\n", json: Presentation.json(record))
    }
}
