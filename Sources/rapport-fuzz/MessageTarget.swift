import CRM
import Foundation
import NIOCore
import SyncModel
import SyncProtocol

/// Target `messages`: the input is the body of one frame (what follows the length prefix),
/// taken as the server takes it: `FrameDecoder`, then, for each message a client may send, the
/// checks the server runs on it before anything reaches a store or the registry (Session.swift
/// and SessionStateMachine.swift in RapportServer), and the reply it builds.
///
/// Properties: nothing traps; every reply encodes; a pushed record that decodes encodes again
/// to bytes that decode to the same state.
enum MessageTarget {
    static let limits = SessionLimits()
    static let schema = CRMSchema.current
    /// The device the session belongs to, as `checkAuthorship` needs one.
    static let device = try! ReplicaID("fuzz-device")

    static func run(_ input: UnsafeRawBufferPointer) {
        guard input.count <= limits.maxFrameBytes else { return }
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt32(input.count), endianness: .big)
        buffer.writeBytes(input)
        var decoder = FrameDecoder(maxFrameBytes: limits.maxFrameBytes)
        let reply: Rapport_V1_Frame
        switch decoder.next(&buffer) {
        case .frame(let frame)?:
            reply = answer(frame)
        case .pullBatch?:
            violated("messages: the server's decoder read a pull batch by hand")
        case .invalid(let error)?:
            reply = error.frame
        case nil:
            violated("messages: a whole frame was not decoded")
        }
        do {
            _ = try reply.serializedBytes() as [UInt8]
        } catch {
            violated("messages: the reply does not encode: \(error)")
        }
    }

    /// What the server would send back, after the checks it runs.
    static func answer(_ frame: Rapport_V1_Frame) -> Rapport_V1_Frame {
        switch frame.body {
        case .hello(let hello)?:
            if let error = checkVersions(protocol: hello.protocolVersion, schema: hello.schemaVersion) { return error.frame }
            if let problem = TenantID.problem(with: hello.tenant) {
                return SyncError(.unknownTenant, "\(TenantID.quoted(hello.tenant)) is not a valid tenant id: \(problem)").frame
            }
            guard (try? ReplicaID(hello.deviceID)) != nil else {
                return SyncError(.authenticationFailed, "'\(hello.deviceID.prefix(64))' is not a valid device id").frame
            }
            _ = Array(hello.secret)
            return SyncError(.authenticationFailed, "client \(hello.client.prefix(64))").frame
        case .enroll(let enroll)?:
            if let error = checkVersions(protocol: enroll.protocolVersion, schema: enroll.schemaVersion) { return error.frame }
            guard TenantID.isValid(enroll.tenant) else {
                return SyncError(.unknownTenant, "\(TenantID.quoted(enroll.tenant)) is not a valid tenant id").frame
            }
            return SyncError(.invalidEnrollmentCode, "\(enroll.tenant.prefix(64)) \(enroll.deviceName.count)").frame
        case .push(let push)?:
            guard push.records.count <= limits.maxBatchRecords else {
                return SyncError(.batchTooLarge, "push of \(push.records.count) records exceeds the limit of \(limits.maxBatchRecords)").frame
            }
            var reply = Rapport_V1_Frame()
            reply.pushResult = self.push(push)
            return reply
        case .pull(let pull)?:
            let maximum = UInt32(clamping: limits.maxBatchRecords)
            let limit = Int(pull.limit == 0 ? maximum : min(pull.limit, maximum))
            guard pull.after <= UInt64(Int64.max) else { return SyncError(.resyncRequired, "checkpoint out of range").frame }
            var reply = Rapport_V1_Frame()
            reply.pullBatch.lastSequence = pull.after
            reply.pullBatch.remainingRecords = UInt64(limit)
            return reply
        case .ping(let ping)?:
            var reply = Rapport_V1_Frame()
            reply.pong.nonce = ping.nonce
            return reply
        case .pong?, .goodbye?, .error?:
            return Rapport_V1_Frame()
        case let body:
            // The server names what it did not expect in its error.
            return SyncError(.unexpectedMessage, "a client does not send \(body.map { "\($0)".prefix(40) } ?? "an empty frame")").frame
        }
    }

    static func checkVersions(protocol version: UInt32, schema: UInt32) -> SyncError? {
        guard version == SyncProtocolVersion.current else {
            return SyncError(.unsupportedProtocolVersion, "client speaks protocol version \(version)")
        }
        guard schema <= CRMSchema.version else {
            return SyncError(.incompatibleSchema, "client schema version \(schema) is newer than the server's")
        }
        return nil
    }

    /// The per-record checks of `SyncServer.push`, short of the store: decode, no record twice,
    /// the schema with its rules, authorship for a record the server does not have yet.
    static func push(_ request: Rapport_V1_PushRequest) -> Rapport_V1_PushResult {
        var results = [Rapport_V1_RecordResult](repeating: Rapport_V1_RecordResult(), count: request.records.count)
        var seen = Set<UUID>()
        for (index, record) in request.records.enumerated() {
            do {
                let state = try record.decoded()
                checkWireRoundTrip(state)
                guard seen.insert(state.id).inserted else {
                    throw ModelError.malformedEncoding("record \(state.id) appears twice in one push")
                }
                try schema.validate(state)
                try state.checkAuthorship(by: device, against: nil)
                results[index].outcome = .applied
            } catch {
                results[index].outcome = .rejected
                results[index].reason = "\(error)"
            }
        }
        // The server keeps the device's conflict reports it can read and drops the others.
        let conflicts = request.conflicts.compactMap { try? $0.decoded() }
        for conflict in conflicts { checkWireRoundTrip(conflict) }
        if let first = conflicts.first, !results.isEmpty {
            results[0].conflicts = [Rapport_V1_ConflictReport(first)]
        }
        var result = Rapport_V1_PushResult()
        result.batchID = request.batchID
        result.results = results
        return result
    }

    /// A conflict the server keeps is sent on to the device whose write lost, in the same form.
    static func checkWireRoundTrip(_ conflict: Conflict) {
        let wire = Rapport_V1_ConflictReport(conflict)
        do {
            // Compared as messages: a real that is NaN is unequal to itself.
            guard Rapport_V1_ConflictReport(try wire.decoded()) == wire else {
                violated("messages: a conflict report, encoded again, decodes to another conflict: \(conflict)")
            }
        } catch {
            violated("messages: a conflict report, encoded again, does not decode: \(error); \(conflict)")
        }
    }

    /// A state that came off the wire goes back on it (a pull, a conflict) in the same encoding.
    static func checkWireRoundTrip(_ state: RecordState) {
        let wire = Rapport_V1_Record(state)
        do {
            let again = try wire.decoded()
            guard Rapport_V1_Record(again) == wire else {
                violated("messages: a pushed record, encoded again, decodes to another state: \(state)")
            }
        } catch {
            violated("messages: a pushed record, encoded again, does not decode: \(error); \(state)")
        }
    }
}
