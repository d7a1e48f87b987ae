import CRM
import Foundation
import NIOCore
import SyncModel
import SyncProtocol
import TestSupport

/// The sessions of Protocol/conformance/sessions. Each runs against a `rapportd` on a fresh data
/// directory where tenant `acme` has the admin `anna@acme.example` (the README's setup), in any
/// order; a session that needs a device enrolls one itself, as a client would.
/// `ConformanceSessionTests` writes them (on request) and runs the files against a real server.
enum ConformanceSessions {
    static let tenant = "acme"
    static let admin = "anna@acme.example"
    static let schemaVersion = CRMSchema.version
    static let client = "conformance-kit"

    /// Values for every placeholder, with which the frames' `hex` is made.
    static let exampleBindings: [String: String] = {
        var bindings = ["start": "0", "pushed": "1"]
        for (n, prefix) in ["", "ben_", "gil_"].enumerated() {
            bindings["\(prefix)code"] = "00000-00000-00000-0000\(n)"
            bindings["\(prefix)device_id"] = "00000000-0000-4000-8000-0000000000d\(n + 1)"
            bindings["\(prefix)secret"] = Data((1...32).map { UInt8($0 + n) }).base64EncodedString()
        }
        return bindings
    }()

    static func json(_ text: String) -> KitJSON { try! KitJSON.parse(text) }

    /// A frame to send, with its bytes made from the example bindings.
    static func frame(_ text: String, records: [String: KitState]? = nil) throws -> KitFrame {
        let probe = SessionVector(name: "", description: "", spec: [], errors: [], records: records, exampleBindings: [:], steps: [])
        let bound = try SessionVector.substitute(text, try probe.bindingRecords(exampleBindings))
        let frame = try Rapport_V1_Frame(jsonString: bound)
        var buffer = ByteBuffer()
        try FrameEncoder.write(frame, to: &buffer)
        return KitFrame(json: json(text), hex: ConformanceKit.hex(buffer.readableBytesView))
    }

    // MARK: Steps several sessions share

    static func enroll(user: String = admin, tenant: String = tenant, captureAs prefix: String = "") throws -> [KitStep] {
        [
            KitStep(note: "an admin makes a one-time enrollment code", admin: ["device", "enroll", "--tenant", tenant, "--user", user, "--json"],
                    capture: ["\(prefix)code": KitCapture(path: "code")]),
            KitStep(connect: true),
            KitStep(send: try frame("""
                {"enroll": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "tenant": "\(tenant)", "code": "${\(prefix)code}", "deviceName": "conformance device", "client": "\(client)"}}
                """)),
            KitStep(expect: json("""
                {"enrolled": {"deviceId": "any", "secret": "any", "tenant": "\(tenant)", "user": "\(user)", "deviceNumber": "any"}}
                """), capture: ["\(prefix)device_id": KitCapture(path: "enrolled.deviceId"), "\(prefix)secret": KitCapture(path: "enrolled.secret")]),
            KitStep(note: "the server closes after Enrolled", expectClose: true),
        ]
    }

    static func hello(tenant: String = tenant, prefix: String = "") throws -> KitStep {
        KitStep(send: try frame("""
            {"hello": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "tenant": "\(tenant)", "deviceId": "${\(prefix)device_id}", "secret": "${\(prefix)secret}", "client": "\(client)"}}
            """))
    }

    static func welcome(user: String = admin, role: String = "admin") -> KitStep {
        KitStep(
            note: "access lists the role's rights per record type (SPEC 2.9); they are the tenant's roles, so the kit does not fix them; retention is the tenant's horizons, here the defaults of 90 and 30 days (SPEC 1.8)",
            expect: json("""
                {"welcome": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "serverReplicaId": "any", "serverSequence": "any",
                 "limits": {"maxFrameBytes": 16777216, "maxBatchRecords": 2000, "idleTimeoutMs": 60000},
                 "access": {"user": "\(user)", "role": "\(role)", "types": "any", "team": "any", "teamMembers": "any"}, "deviceNumber": "any",
                 "retention": {"tombstoneHorizonMs": "7776000000", "conflictHorizonMs": "2592000000"}}}
                """),
            capture: ["start": KitCapture(path: "welcome.serverSequence", default: "0")])
    }

    /// An Error the client cannot cure by retrying (`retryable` false, so left out).
    static func error(_ code: String, note: String? = nil) -> KitStep {
        KitStep(note: note, expect: json(#"{"error": {"code": "\#(code)", "message": "any"}}"#))
    }

    static let goodbye: [KitStep] = [
        KitStep(send: try! frame(#"{"goodbye": {"reason": "done"}}"#)),
        KitStep(note: "the server closes after Goodbye", expectClose: true),
    ]

    static let ping = KitStep(send: try! frame(#"{"ping": {"nonce": "81985529216486895"}}"#))
    static let pong = KitStep(expect: json(#"{"pong": {"nonce": "81985529216486895"}}"#))

    /// A hello that must be refused: placeholder-free, from a device that does not exist, with
    /// `changes` made to a valid one.
    static func refusedHello(_ changes: [String: KitJSON], _ code: String, note: String) throws -> [KitStep] {
        var hello: [String: KitJSON] = [
            "protocolVersion": .number(1), "schemaVersion": .number(Double(schemaVersion)), "tenant": .string("acme"),
            "deviceId": .string("00000000-0000-4000-8000-00000000dead"),
            "secret": .string(Data(count: 32).base64EncodedString()), "client": .string(client),
        ]
        hello.merge(changes) { $1 }
        return [
            KitStep(note: note, connect: true),
            KitStep(send: try frame(KitJSON.object(["hello": .object(hello)]).text)),
            error(code),
            KitStep(expectClose: true),
        ]
    }

    // MARK: Records

    static func contact(_ id: String, replica: String, fields: [String: KitValue], type: String = "contact") -> KitState {
        let dot = KitDot(replica: replica, counter: "1")
        let time = String(HLCTimestamp(wallMilliseconds: 1_750_000_000_000, logical: 0).rawValue)
        return KitState(
            id: id, type: type, vector: [replica: "1"],
            liveness: KitLiveness(deleted: false, dot: dot, timestamp: time, deletionContext: [:]),
            fields: fields.mapValues { KitField(register: KitRegister(value: $0, dot: dot, timestamp: time)) },
            encoded: nil)
    }

    static func record(_ name: String, _ records: [String: KitState]) -> String {
        let state = records[name]!
        return #"{"id": "\#(Data(UUID(uuidString: state.id)!.bytes).base64EncodedString())", "type": "\#(state.type)", "vector": "${record:\#(name):vector}", "state": "${record:\#(name):state}"}"#
    }

    // MARK: Sessions

    static var all: [SessionVector] {
        get throws {
            try [
                enrollHelloPingGoodbye(), pushPullRoundTrip(), pushRejections(), pullCheckpointAhead(), batchTooLarge(),
                secondHello(), pushBeforeHello(), malformedFrame(), frameTooLarge(), unknownMessageType(), helloRefusals(),
                wrongSecret(), enrollmentRefusals(), deviceRevoked(), repRefusedThenSuspended(), tenantSuspendedThenDeleted(),
            ]
        }
    }

    static func session(_ name: String, _ description: String, spec: [String], errors: [String] = [],
                        records: [String: KitState]? = nil, _ steps: [KitStep]) -> SessionVector {
        SessionVector(name: name, description: description, spec: spec, errors: errors, records: records,
                      exampleBindings: exampleBindings, steps: steps)
    }

    static func enrollHelloPingGoodbye() throws -> SessionVector {
        session("enroll_hello_ping_goodbye",
                "A device enrolls with a code from rapportctl, logs in with the id and secret it received, pings, and says Goodbye.",
                spec: ["2.3"],
                try enroll() + [KitStep(connect: true), try hello(), welcome(), ping, pong] + goodbye)
    }

    static func pushPullRoundTrip() throws -> SessionVector {
        let records = ["contact": contact("5eb0c0de-0000-4000-8000-000000000001", replica: "${device_id}",
                                          fields: ["first_name": .text("Ada"), "last_name": .text("Lovelace"), "email": .text("ada@example.com")])]
        return session(
            "push_pull_round_trip",
            "The device pushes a new contact written under its own id (APPLIED), pushes it again (UNCHANGED: the server has it), then pulls from the checkpoint it had at Welcome and receives exactly that record, byte for byte, with the sequence the push answered. A device pulls back its own pushed records.",
            spec: ["2.3", "3"], records: records,
            try enroll() + [
                KitStep(connect: true), try hello(), welcome(),
                KitStep(send: try frame(#"{"push": {"batchId": "1", "records": [\#(record("contact", records))]}}"#, records: records)),
                KitStep(expect: json(#"{"pushResult": {"batchId": "1", "results": [{"outcome": "APPLIED"}], "serverSequence": "any"}}"#),
                        capture: ["pushed": KitCapture(path: "pushResult.serverSequence")]),
                KitStep(send: try frame(#"{"push": {"batchId": "2", "records": [\#(record("contact", records))]}}"#, records: records)),
                KitStep(expect: json(#"{"pushResult": {"batchId": "2", "results": [{"outcome": "UNCHANGED"}], "serverSequence": "${pushed}"}}"#)),
                KitStep(note: "nothing else writes to the tenant meanwhile: the batch holds the pushed record alone",
                        send: try frame(#"{"pull": {"after": "${start}", "limit": 100}}"#)),
                KitStep(expect: json(#"{"pullBatch": {"records": [\#(record("contact", records))], "lastSequence": "${pushed}"}}"#)),
            ] + goodbye)
    }

    static func pushRejections() throws -> SessionVector {
        let records = [
            "foreign": contact("5eb0c0de-0000-4000-8000-000000000002", replica: "mallory-phone",
                               fields: ["last_name": .text("Forged")]),
            "ticket": contact("5eb0c0de-0000-4000-8000-000000000003", replica: "${device_id}",
                              fields: ["subject": .text("Printer on fire")], type: "ticket"),
            "bad_email": contact("5eb0c0de-0000-4000-8000-000000000004", replica: "${device_id}",
                                 fields: ["last_name": .text("Hopper"), "email": .text("not an e-mail address")]),
            "good": contact("5eb0c0de-0000-4000-8000-000000000005", replica: "${device_id}",
                            fields: ["last_name": .text("Hamilton")]),
        ]
        let pushed = ["foreign", "ticket", "bad_email", "good", "good"].map { record($0, records) }.joined(separator: ", ")
        return session(
            "push_rejections",
            "One push of five records answered one by one, in order: a record carrying another replica's dot (a device may only write under its own id), a record of an unknown type, a contact whose email breaks its format rule, a valid contact, and the same valid contact again in the same push (the first is applied, the second refused). The session stays open.",
            spec: ["2.3", "1.3"], records: records,
            try enroll() + [
                KitStep(connect: true), try hello(), welcome(),
                KitStep(send: try frame(#"{"push": {"batchId": "7", "records": [\#(pushed)]}}"#, records: records)),
                KitStep(
                    note: "reasons are for people: the kit does not fix their wording. The foreign dot is refused with PERMISSION_DENIED (SPEC 2.6); the invalid records carry no code",
                    expect: json("""
                        {"pushResult": {"batchId": "7", "serverSequence": "any", "results": [
                          {"outcome": "REJECTED", "code": "PERMISSION_DENIED", "reason": "any"}, {"outcome": "REJECTED", "reason": "any"},
                          {"outcome": "REJECTED", "reason": "any"}, {"outcome": "APPLIED"}, {"outcome": "REJECTED", "reason": "any"}]}}
                        """)),
                ping, pong,
            ] + goodbye)
    }

    static func pullCheckpointAhead() throws -> SessionVector {
        session("pull_checkpoint_ahead",
                "A pull from a checkpoint ahead of the server's sequence (the server was restored from a backup) is answered RESYNC_REQUIRED, and the session stays open: the device pulls from 0.",
                spec: ["2.3", "2.6"], errors: ["RESYNC_REQUIRED"],
                try enroll() + [
                    KitStep(connect: true), try hello(), welcome(),
                    KitStep(send: try frame(#"{"pull": {"after": "1000000000", "limit": 100}}"#)),
                    error("RESYNC_REQUIRED", note: "not retryable: the device forgets its checkpoint and pulls from 0"),
                    KitStep(send: try frame(#"{"pull": {"limit": 100}}"#)),
                    KitStep(expect: json(#"{"pullBatch": {"records": "any", "lastSequence": "any", "conflicts": "any"}}"#)),
                ] + goodbye)
    }

    static func batchTooLarge() throws -> SessionVector {
        let empties = Array(repeating: "{}", count: 2_001).joined(separator: ", ")
        return session("batch_too_large",
                       "A push of 2,001 records, one more than Welcome's maxBatchRecords, is refused whole before any record is looked at (the records here are empty).",
                       spec: ["2.5", "2.6"], errors: ["BATCH_TOO_LARGE"],
                       try enroll() + [
                           KitStep(connect: true), try hello(), welcome(),
                           KitStep(send: try frame(#"{"push": {"batchId": "3", "records": [\#(empties)]}}"#)),
                           error("BATCH_TOO_LARGE"), KitStep(expectClose: true),
                       ])
    }

    static func secondHello() throws -> SessionVector {
        session("second_hello", "A second Hello in a session is a message out of order.",
                spec: ["2.3", "2.6"], errors: ["UNEXPECTED_MESSAGE"],
                try enroll() + [
                    KitStep(connect: true), try hello(), welcome(), try hello(),
                    error("UNEXPECTED_MESSAGE"), KitStep(expectClose: true),
                ])
    }

    static func pushBeforeHello() throws -> SessionVector {
        session("push_before_hello", "A first frame other than Hello or Enroll is a message out of order.",
                spec: ["2.3", "2.6"], errors: ["UNEXPECTED_MESSAGE"],
                [
                    KitStep(connect: true),
                    KitStep(send: try frame(#"{"push": {"batchId": "1"}}"#)),
                    error("UNEXPECTED_MESSAGE"), KitStep(expectClose: true),
                ])
    }

    static func malformedFrame() throws -> SessionVector {
        session("malformed_frame", "Three bytes that do not parse as a Frame (a truncated varint).",
                spec: ["2.2", "2.6"], errors: ["MALFORMED_FRAME"],
                [
                    KitStep(connect: true), KitStep(sendBytes: "00000003ffffff"),
                    error("MALFORMED_FRAME"), KitStep(expectClose: true),
                ])
    }

    static func frameTooLarge() throws -> SessionVector {
        session("frame_too_large_before_login",
                "A length prefix of 16 KiB + 1 before login, followed by two bytes of body: refused on the prefix alone, without waiting for the body.",
                spec: ["2.2", "2.5", "2.6"], errors: ["FRAME_TOO_LARGE"],
                [
                    KitStep(connect: true), KitStep(sendBytes: "000040010a00"),
                    error("FRAME_TOO_LARGE"), KitStep(expectClose: true),
                ])
    }

    static func unknownMessageType() throws -> SessionVector {
        session("unknown_message_type",
                "A Frame holding only field 99 (a message this version does not know), then, on a new connection, a Frame with an empty body.",
                spec: ["2.2", "2.6", "2.8"], errors: ["UNKNOWN_MESSAGE_TYPE"],
                [
                    KitStep(connect: true), KitStep(sendBytes: "000000039a0600"),
                    error("UNKNOWN_MESSAGE_TYPE"), KitStep(expectClose: true),
                    KitStep(connect: true), KitStep(sendBytes: "00000000"),
                    error("UNKNOWN_MESSAGE_TYPE"), KitStep(expectClose: true),
                ])
    }

    static func helloRefusals() throws -> SessionVector {
        let codes = ["UNSUPPORTED_PROTOCOL_VERSION", "INCOMPATIBLE_SCHEMA", "UNKNOWN_TENANT", "AUTHENTICATION_FAILED"]
        return session(
            "hello_refusals",
            "Hellos refused in the order the server checks them, each on its own connection: protocol version 2, a schema newer than the server's, a tenant that does not exist, a tenant id that is not a slug, and a device the tenant does not have.",
            spec: ["2.3", "2.6"], errors: codes,
            try refusedHello(["protocolVersion": .number(2)], "UNSUPPORTED_PROTOCOL_VERSION", note: "protocol version 2")
                + refusedHello(["schemaVersion": .number(999)], "INCOMPATIBLE_SCHEMA", note: "schema 999, newer than the server's")
                + refusedHello(["tenant": .string("no-such-tenant")], "UNKNOWN_TENANT", note: "no such tenant")
                + refusedHello(["tenant": .string("Not A Slug!")], "UNKNOWN_TENANT", note: "not a valid tenant id")
                + refusedHello([:], "AUTHENTICATION_FAILED", note: "an unknown device of acme"))
    }

    static func wrongSecret() throws -> SessionVector {
        session("wrong_secret", "An enrolled device's id with a secret that is not its own.",
                spec: ["2.3", "2.6"], errors: ["AUTHENTICATION_FAILED"],
                try enroll() + [
                    KitStep(connect: true),
                    KitStep(send: try frame("""
                        {"hello": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "tenant": "acme", "deviceId": "${device_id}", "secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "client": "\(client)"}}
                        """)),
                    error("AUTHENTICATION_FAILED"), KitStep(expectClose: true),
                ])
    }

    static func enrollmentRefusals() throws -> SessionVector {
        session("enrollment_refusals",
                "Enroll with a code nobody made, then a real code twice: the first enrolls, the second is refused as used.",
                spec: ["2.3", "2.6"], errors: ["INVALID_ENROLLMENT_CODE", "ENROLLMENT_CODE_USED"],
                [
                    KitStep(connect: true),
                    KitStep(send: try frame("""
                        {"enroll": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "tenant": "acme", "code": "ZZZZZ-ZZZZZ-ZZZZZ-ZZZZZ", "deviceName": "conformance device", "client": "\(client)"}}
                        """)),
                    error("INVALID_ENROLLMENT_CODE"), KitStep(expectClose: true),
                ] + (try enroll()) + [
                    KitStep(connect: true),
                    KitStep(send: try frame("""
                        {"enroll": {"protocolVersion": 1, "schemaVersion": \(schemaVersion), "tenant": "acme", "code": "${code}", "deviceName": "conformance device", "client": "\(client)"}}
                        """)),
                    error("ENROLLMENT_CODE_USED"), KitStep(expectClose: true),
                ])
    }

    static func deviceRevoked() throws -> SessionVector {
        session("device_revoked",
                "An admin revokes a device while it is logged in: the live session gets DEVICE_REVOKED and is closed (the server notices within about a second), and its next Hello is refused the same way.",
                spec: ["2.3", "2.6"], errors: ["DEVICE_REVOKED"],
                try enroll() + [
                    KitStep(connect: true), try hello(), welcome(),
                    KitStep(admin: ["device", "revoke", "${device_id}", "--tenant", "acme"]),
                    error("DEVICE_REVOKED"), KitStep(expectClose: true),
                    KitStep(connect: true), try hello(), error("DEVICE_REVOKED"), KitStep(expectClose: true),
                ])
    }

    static func repRefusedThenSuspended() throws -> SessionVector {
        let records = ["anas": contact("5eb0c0de-0000-4000-8000-000000000006", replica: "${ben_device_id}",
                                       fields: ["last_name": .text("Babbage"), "owner": .text(admin)])]
        return session(
            "rep_refused_then_suspended",
            "ben, a rep, pushes a contact owned by anna: his role may only create records he may write (his own), so the record is REJECTED with code PERMISSION_DENIED. Then an admin suspends ben, and his next Hello is refused.",
            spec: ["2.3", "2.6", "2.9"], errors: ["PERMISSION_DENIED", "USER_SUSPENDED"], records: records,
            [KitStep(admin: ["user", "add", "--tenant", "acme", "--email", "ben@acme.example", "--name", "Ben", "--role", "rep"])]
                + (try enroll(user: "ben@acme.example", captureAs: "ben_")) + [
                    KitStep(connect: true), try hello(prefix: "ben_"), welcome(user: "ben@acme.example", role: "rep"),
                    KitStep(send: try frame(#"{"push": {"batchId": "1", "records": [\#(record("anas", records))]}}"#, records: records)),
                    KitStep(expect: json(#"{"pushResult": {"batchId": "1", "results": [{"outcome": "REJECTED", "reason": "any", "code": "PERMISSION_DENIED"}], "serverSequence": "any"}}"#)),
                ] + goodbye + [
                    KitStep(admin: ["user", "suspend", "--tenant", "acme", "--email", "ben@acme.example"]),
                    KitStep(connect: true), try hello(prefix: "ben_"), error("USER_SUSPENDED"), KitStep(expectClose: true),
                ])
    }

    static func tenantSuspendedThenDeleted() throws -> SessionVector {
        session("tenant_suspended_then_deleted",
                "A second tenant, globex, with a device: suspended, its Hello gets TENANT_SUSPENDED; deleted, UNKNOWN_TENANT.",
                spec: ["2.3", "2.6", "2.7"], errors: ["TENANT_SUSPENDED", "UNKNOWN_TENANT"],
                [
                    KitStep(admin: ["tenant", "create", "globex", "--name", "Globex"]),
                    KitStep(admin: ["user", "add", "--tenant", "globex", "--email", "gil@globex.example", "--name", "Gil", "--role", "admin"]),
                ] + (try enroll(user: "gil@globex.example", tenant: "globex", captureAs: "gil_")) + [
                    KitStep(admin: ["tenant", "suspend", "globex"]),
                    KitStep(connect: true), try hello(tenant: "globex", prefix: "gil_"), error("TENANT_SUSPENDED"), KitStep(expectClose: true),
                    KitStep(admin: ["tenant", "delete", "globex", "--confirm", "globex"]),
                    KitStep(connect: true), try hello(tenant: "globex", prefix: "gil_"), error("UNKNOWN_TENANT"), KitStep(expectClose: true),
                ])
    }
}
