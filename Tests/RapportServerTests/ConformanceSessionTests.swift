import Foundation
import NIOCore
import SyncProtocol
import TestSupport
import Testing
import TestScheduling

/// Protocol/conformance/sessions, run as a client in another language would run them: against
/// a `rapportd` process on a fresh data directory prepared with `rapportctl` (tenant `acme` and
/// its admin), over TLS on loopback, each frame built from its JSON and each answer compared,
/// as JSON, with the session's pattern.
///
/// `RAPPORT_WRITE_VECTORS=1 swift test --filter ConformanceSessionTests` rewrites the files from
/// `ConformanceSessions`; the normal run checks the files and runs every one.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct ConformanceSessionTests {
    @Test(.blocking, .enabled(if: ConformanceKit.writing, "set RAPPORT_WRITE_VECTORS=1 to rewrite Protocol/conformance/sessions"))
    func writeVectors() throws {
        try ConformanceKit.rewrite(SessionVector.directory, try ConformanceSessions.all.map { ($0.name, try ConformanceKit.encode($0)) })
    }

    @Test(.blocking) func theFilesAreWhatTheGeneratorMakes() throws {
        let sessions = try ConformanceSessions.all
        #expect(Set(try SessionVector.loadAll().map(\.name)) == Set(sessions.map(\.name)))
        for session in sessions {
            let file = SessionVector.directory.appendingPathComponent("\(session.name).json")
            #expect(try Data(contentsOf: file) == (try ConformanceKit.encode(session)), "\(session.name).json is stale; rewrite the vectors?")
        }
    }

    /// Every frame's `hex` is its JSON with the example bindings, framed; and every placeholder
    /// a session uses has an example.
    @Test(.blocking) func everyFrameIsItsJSONWithTheExampleBindings() throws {
        for session in try SessionVector.loadAll() {
            let bindings = try session.bindingRecords(session.exampleBindings)
            for (index, step) in session.steps.enumerated() {
                guard let send = step.send else { continue }
                let frame = try Rapport_V1_Frame(jsonString: try SessionVector.substitute(send.json.text, bindings))
                var buffer = ByteBuffer()
                try FrameEncoder.write(frame, to: &buffer)
                #expect(ConformanceKit.hex(buffer.readableBytesView) == send.hex, "\(session.name) step \(index + 1)")
            }
        }
    }

    /// Which error codes of SPEC 2.6 the kit provokes; the others need a fault or a wait the
    /// README lists.
    @Test(.blocking) func theSessionsProvokeEveryErrorAClientCan() throws {
        let provoked = Set(try SessionVector.loadAll().flatMap(\.errors))
        let notProvoked: Set = ["TIMEOUT", "SERVER_BUSY", "SHUTTING_DOWN", "INTERNAL", "STORAGE_FULL", "ENROLLMENT_CODE_EXPIRED"]
        let all = Set(Rapport_V1_Error.Code.allCases.filter { $0 != .unspecified }.map { "\($0)" }.map(Self.protoName))
        #expect(provoked.union(notProvoked) == all, "\(all.subtracting(provoked.union(notProvoked)).sorted())")
        #expect(provoked.isDisjoint(with: notProvoked))
    }

    /// `serverBusy` -> `SERVER_BUSY`.
    static func protoName(_ swiftName: String) -> String {
        swiftName.reduce(into: "") { name, c in
            if c.isUppercase { name += "_" }
            name += c.uppercased()
        }
    }

    @Test func everySessionPassesAgainstARealServer() async throws {
        let dir = try TemporaryDirectory()
        // As the README says: no scheduled rule pass, so nothing but the sessions writes.
        let operated = try await OperatedServer(dir, arguments: ["--rules-interval", "0"])
        defer { operated.server.stop() }
        let sessions = try SessionVector.loadAll()
        try #require(!sessions.isEmpty)
        for session in sessions {
            try await run(session, on: operated)
        }
    }

    func run(_ session: SessionVector, on operated: OperatedServer) async throws {
        var bindings: [String: String] = [:]
        var connection: RawConnection?
        defer { if let connection { Task { await connection.close() } } }
        func capture(_ captures: [String: KitCapture]?, from json: KitJSON, _ label: String) throws {
            for (name, capture) in captures ?? [:] {
                switch json[path: capture.path] {
                case .string(let value)?: bindings[name] = value
                case .number(let value)?: bindings[name] = String(Int64(value))
                case nil where capture.default != nil: bindings[name] = capture.default
                case let other: throw KitError("\(label): cannot capture \(capture.path) from \(other?.text ?? "nothing")")
                }
            }
        }
        for (index, step) in session.steps.enumerated() {
            let label = "\(session.name) step \(index + 1)"
            if let admin = step.admin {
                let result = try await operated.ctl.run(try admin.map { try SessionVector.substitute($0, bindings) })
                try #require(result.status == 0, "\(label): rapportctl \(admin.joined(separator: " ")): \(result.error)")
                if step.capture != nil { try capture(step.capture, from: try KitJSON.parse(result.output), label) }
            }
            if step.connect == true {
                await connection?.close()
                let opened = try await RawConnection.connect(port: operated.server.port, caPath: operated.data + "/tls/ca.pem")
                try await opened.waitForHandshake()
                connection = opened
            }
            if let send = step.send {
                let text = try SessionVector.substitute(send.json.text, try session.bindingRecords(bindings))
                try await #require(connection).send(try Rapport_V1_Frame(jsonString: text))
            }
            if let bytes = step.sendBytes {
                try await #require(connection).send(bytes: try ConformanceKit.bytes(hex: bytes))
            }
            if let expect = step.expect {
                let pattern = try KitJSON.parse(try SessionVector.substitute(expect.text, try session.bindingRecords(bindings)))
                guard let frame = try await #require(connection).nextFrame() else {
                    Issue.record("\(label): the server closed instead of sending \(expect.text)")
                    return
                }
                let actual = try KitJSON.parse(try frame.jsonString())
                if let problem = pattern.mismatch(actual) {
                    Issue.record("\(label): \(problem)\n  got \(actual.text)")
                    return
                }
                try capture(step.capture, from: actual, label)
            }
            if step.expectClose == true {
                let frames = try await #require(connection).waitForClose()
                #expect(frames.isEmpty, "\(label): frames before the close: \(frames)")
            }
            if step.close == true {
                await connection?.close()
                connection = nil
            }
        }
    }
}
