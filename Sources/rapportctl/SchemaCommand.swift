import ArgumentParser
import CRM

/// Prints the CRM schema for clients in other languages: what `scripts/generate-schema.sh`
/// writes into `Protocol/schema.json` (`--json`) and section 4 of `Protocol/SPEC.md`.
struct SchemaCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "schema",
        abstract: "Print the CRM schema: record types, fields, kinds, rules, settings (--json: Protocol/schema.json).",
        discussion: """
            The schema this build enforces, the same on the server and on every device; a \
            tenant's custom fields, pipeline and settings are records of the tenant and extend \
            it. Needs no data directory.
            """)
    @OptionGroup var common: CommonOptions

    func run() throws {
        let document = CRMSchemaDocument.current
        Output.standard(common.json ? try document.json() : document.markdown())
    }
}
