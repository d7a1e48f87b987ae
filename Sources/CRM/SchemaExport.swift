import Foundation
import SyncModel

/// The CRM schema as a document for clients in other languages: `Protocol/schema.json` and the
/// tables of section 4 of `Protocol/SPEC.md` are this, printed by `rapportctl schema`
/// (`scripts/generate-schema.sh`), and a test regenerates both and compares, so the published
/// schema is always the one the code enforces.
///
/// Everything that is data in the code (types, fields, kinds, rules, computed fields, setting
/// keys, custom field kinds, the default pipeline) is read from it; what is code (a store rule,
/// an effect) is described here in words, next to the names the code uses.
public struct CRMSchemaDocument: Codable, Sendable, Equatable {
    /// `CRMSchema.version`: what a client sends in `Hello.schema_version`.
    public var schemaVersion: UInt32
    public var limits: Limits
    public var kinds: [Described]
    public var formats: [Described]
    public var types: [TypeEntry]
    public var storeRules: [Described]
    public var computedFields: [ComputedField]
    public var customFields: CustomFields
    public var defaultPipeline: [Stage]
    public var settings: [Setting]
    public var effects: [Described]

    /// Bounds every field keeps, whatever its type.
    public struct Limits: Codable, Sendable, Equatable {
        public var maxTextBytes: Int
        public var maxBlobBytes: Int
        public var fieldName: String

        enum CodingKeys: String, CodingKey {
            case maxTextBytes = "max_text_bytes", maxBlobBytes = "max_blob_bytes", fieldName = "field_name"
        }
    }

    /// A name and what it means.
    public struct Described: Codable, Sendable, Equatable {
        public var name: String
        public var description: String
    }

    /// One record type.
    public struct TypeEntry: Codable, Sendable, Equatable {
        public var name: String
        /// Tenant configuration (`pipeline_stage`, `custom_field`, `setting`): read by every role.
        public var configuration: Bool
        /// Whether a tenant may add custom fields to it.
        public var customizable: Bool
        public var fields: [Field]
    }

    /// One declared field and its rule.
    public struct Field: Codable, Sendable, Equatable {
        public var name: String
        public var kind: String
        public var required: Bool
        public var choices: [String]?
        public var format: String?
        /// The text is the id (a UUID) of a record of this type in the same store.
        public var references: String?
        public var minimum: Double?
        public var maximum: Double?
        /// Computed by the tenant's rules: refused from a user's write unless overridable.
        public var computed: Bool?
        /// A check against the tenant's data beyond `references` (`opportunity.stage`).
        public var storeRule: String?

        enum CodingKeys: String, CodingKey {
            case name, kind, required, choices, format, references, minimum, maximum, computed
            case storeRule = "store_rule"
        }
    }

    /// A field the rules compute, and the setting that lets users set it by hand.
    public struct ComputedField: Codable, Sendable, Equatable {
        public var field: String
        public var overrideSetting: String

        enum CodingKeys: String, CodingKey { case field, overrideSetting = "override_setting" }
    }

    /// How `custom_field` records extend the schema per tenant.
    public struct CustomFields: Codable, Sendable, Equatable {
        public var entities: [String]
        public var kinds: [Described]
    }

    /// A stage of the pipeline a tenant without `pipeline_stage` records has.
    public struct Stage: Codable, Sendable, Equatable {
        public var name: String
        public var position: Int
        public var probability: Int
        public var closed: Bool
        public var won: Bool
    }

    /// A `setting` key this version understands and the values it takes.
    public struct Setting: Codable, Sendable, Equatable {
        public var key: String
        public var expects: String
    }

    enum CodingKeys: String, CodingKey {
        case schemaVersion = "schema_version", limits, kinds, formats, types
        case storeRules = "store_rules", computedFields = "computed_fields", customFields = "custom_fields"
        case defaultPipeline = "default_pipeline", settings, effects
    }
}

extension CRMSchemaDocument {
    /// The document of this version of the CRM: `CRMSchema.current` and the rules around it.
    public static let current: CRMSchemaDocument = {
        let schema = CRMSchema.current
        let configuration = CRMStoreRules().configurationTypes
        let computed = Set(CRMDerivedFields.all)
        let types = schema.types.values.sorted { $0.name < $1.name }.map { type in
            TypeEntry(
                name: type.name, configuration: configuration.contains(type.name),
                customizable: CRMSchema.customizableEntities.contains(type.name),
                fields: type.fields.keys.sorted().map { name in
                    let rule = type.rules[name] ?? FieldRule()
                    return Field(
                        name: name, kind: type.fields[name]!.rawValue, required: rule.required, choices: rule.choices,
                        format: rule.format?.rawValue, references: rule.reference, minimum: rule.minimum, maximum: rule.maximum,
                        computed: computed.contains("\(type.name).\(name)") ? true : nil,
                        storeRule: fieldStoreRules["\(type.name).\(name)"])
                })
        }
        // A value no key takes makes `expectedForm` say what the key takes.
        let settings = CRMSettings.keys.sorted().map { key in
            Setting(key: key, expects: CRMSettings.expectedForm(ofKey: key, value: "?") ?? "any text")
        }
        return CRMSchemaDocument(
            schemaVersion: CRMSchema.version,
            limits: Limits(maxTextBytes: Schema.maxTextBytes, maxBlobBytes: Schema.maxBlobBytes,
                           fieldName: "a letter or _, then letters, digits or _; at most 64 bytes"),
            kinds: FieldKind.allCases.map { Described(name: $0.rawValue, description: describe($0)) },
            formats: FieldRule.Format.allCases.map { Described(name: $0.rawValue, description: $0.description) },
            types: types,
            storeRules: storeRules,
            computedFields: CRMDerivedFields.all.sorted().map { ComputedField(field: $0, overrideSetting: "override.\($0)") },
            customFields: CustomFields(
                entities: CRMSchema.customizableEntities,
                kinds: CustomField.Kind.allCases.map { Described(name: $0.rawValue, description: describe($0)) }),
            defaultPipeline: PipelineStage.defaultPipeline.map {
                Stage(name: $0.name, position: $0.position, probability: $0.probability, closed: $0.isClosed, won: $0.isWon)
            },
            settings: settings,
            effects: effects)
    }()

    /// The document as `Protocol/schema.json` holds it: keys sorted, two-space indentation
    /// (as Foundation prints it), a final newline.
    public func json() throws -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes]
        return String(decoding: try encoder.encode(self), as: UTF8.self) + "\n"
    }

    /// The generated part of SPEC.md section 4: one table per record type, then the computed
    /// fields, the custom field kinds and the setting keys.
    public func markdown() -> String {
        var out = "\nSchema version \(schemaVersion).\n\n| kind | values |\n|---|---|\n"
        for kind in kinds { out += "| `\(kind.name)` | \(kind.description) |\n" }
        out += "\n| format | text |\n|---|---|\n"
        for format in formats { out += "| `\(format.name)` | \(format.description) |\n" }
        for type in types {
            var notes: [String] = []
            if type.configuration { notes.append("tenant configuration") }
            if type.customizable { notes.append("takes custom fields") }
            out += "\n#### `\(type.name)`" + (notes.isEmpty ? "" : " (\(notes.joined(separator: "; ")))") + "\n\n"
            out += "| field | kind | rule |\n|---|---|---|\n"
            for field in type.fields {
                out += "| `\(field.name)` | \(field.kind) | \(Self.rule(of: field)) |\n"
            }
        }
        out += "\n#### Computed fields\n\nRefused from a user's write unless the tenant sets the override setting to `true`; "
        out += "the record's `overrides` then lists the field and the rules leave it alone.\n\n"
        out += "| field | override setting |\n|---|---|\n"
        for field in computedFields { out += "| `\(field.field)` | `\(field.overrideSetting)` |\n" }
        out += "\n#### Custom fields\n\nEntities that take them: " + customFields.entities.map { "`\($0)`" }.joined(separator: ", ") + ".\n\n"
        out += "| kind | values |\n|---|---|\n"
        for kind in customFields.kinds { out += "| `\(kind.name)` | \(kind.description) |\n" }
        out += "\n#### Default pipeline\n\n| stage | position | probability | closed | won |\n|---|---|---|---|---|\n"
        for stage in defaultPipeline {
            out += "| `\(stage.name)` | \(stage.position) | \(stage.probability) | \(stage.closed ? "yes" : "no") | \(stage.won ? "yes" : "no") |\n"
        }
        out += "\n#### Settings\n\nA `setting` record's `key` and the `value` it takes (text); a key not listed is kept and ignored.\n\n"
        out += "| key | value |\n|---|---|\n"
        for setting in settings { out += "| `\(setting.key)` | \(setting.expects) |\n" }
        out += "\n#### Store rules\n\n"
        for rule in storeRules { out += "- **\(rule.name)**: \(rule.description)\n" }
        out += "\n#### Effects and refusals\n\n"
        for effect in effects { out += "- **\(effect.name)**: \(effect.description)\n" }
        return out + "\n"
    }

    private static func rule(of field: Field) -> String {
        var parts: [String] = []
        if field.required { parts.append("required") }
        if let choices = field.choices { parts.append("one of " + choices.map { "`\($0)`" }.joined(separator: ", ")) }
        if let format = field.format { parts.append("format `\(format)`") }
        if let reference = field.references { parts.append("references `\(reference)`") }
        switch (field.minimum, field.maximum) {
        case let (minimum?, maximum?): parts.append("\(show(minimum)) to \(show(maximum))")
        case let (minimum?, nil): parts.append("at least \(show(minimum))")
        case let (nil, maximum?): parts.append("at most \(show(maximum))")
        case (nil, nil): break
        }
        if field.computed == true { parts.append("computed") }
        if let storeRule = field.storeRule { parts.append(storeRule) }
        return parts.joined(separator: "; ")
    }

    private static func show(_ number: Double) -> String {
        number.rounded() == number && abs(number) < 1e15 ? String(Int64(number)) : String(number)
    }

    private static func describe(_ kind: FieldKind) -> String {
        switch kind {
        case .text: "UTF-8 text (value tag 05), or null"
        case .integer: "64-bit signed integer (tag 03), or null"
        case .real: "finite IEEE 754 double (tag 04), or null"
        case .boolean: "true or false (tags 02, 01), or null"
        case .blob: "bytes (tag 06), or null"
        case .counter: "a counter field (kind byte 01): changed by increments only, concurrent ones add up"
        }
    }

    private static func describe(_ kind: CustomField.Kind) -> String {
        switch kind {
        case .text: "any text"
        case .number: "an integer or a finite real"
        case .date: "text `YYYY-MM-DD`"
        case .choice: "text, one of the definition's `choices` (comma-separated)"
        case .boolean: "a boolean"
        }
    }

    /// Checks of `CRMStoreRules` on single fields beyond their references.
    private static let fieldStoreRules = [
        "opportunity.stage": "a stage of the tenant's pipeline",
    ]

    /// What `CRMStoreRules` checks against the tenant's data.
    private static let storeRules = [
        Described(name: "references", description:
            "a field with a reference rule holds the id of a record of the referenced type in the same tenant store, deleted or not; "
            + "the records of one push may reference each other in any order"),
        Described(name: "pipeline", description:
            "an opportunity's `stage` is the `name` of one of the tenant's `pipeline_stage` records, or of the default pipeline when it has none"),
        Described(name: "custom fields", description:
            "a value of a tenant's custom field fits its definition's kind; a `custom_field` record names a valid field name that "
            + "the entity does not have built in, and a `choice` field lists its choices; when two definitions name one field, "
            + "the one with the smallest record id counts"),
        Described(name: "settings", description:
            "a `setting` record of a known key holds a value that key takes (see Settings); an unknown key is kept and ignored"),
    ]

    /// What `CRMChangeEffects` refuses or writes when a change is accepted.
    private static let effects = [
        Described(name: "computed fields", description:
            "a write of a computed field by a device is refused unless the tenant allows its override; an account's "
            + "`lifecycle_stage` may be set to `customer` or `core` only with a won opportunity to show for it"),
        Described(name: "consent", description:
            "a call to a contact marked `do_not_call` or who withdrew consent to calls, an e-mail activity to a contact who "
            + "withdrew consent to e-mail (as it stood when the activity happened: a call made before the contact was marked "
            + "or withdrew is history), and a contact without e-mail consent in "
            + "an e-mail campaign are refused, or accepted with `consent_warning` set when the setting "
            + "`consent.enforcement` is `flag`"),
        Described(name: "cases", description:
            "a new case gets its `number`, `opened_at` and, from its priority, type, severity and account's value segment, "
            + "`response_due` and `resolution_due`; `resolved_at` and `closed_at` follow its status; closing it makes a "
            + "satisfaction follow-up task"),
        Described(name: "opportunities", description:
            "a stage change adds a `stage_change` record, sets the stage's `probability` (unless written with or after the "
            + "stage) and `closed_at` on a closed stage; a won stage moves the account's `lifecycle_stage`"),
        Described(name: "contacts", description: "a consent change without its `_at` field gets it, from the time of the write"),
        Described(name: "leads", description:
            "a lead whose `status` is written `converted` without `converted_contact` gets the account (unless "
            + "`converted_account` names one) and the contact a conversion makes, with ids derived from the lead"),
    ]
}
