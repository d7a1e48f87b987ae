import Access
import Foundation
import NIOPosix
import Registry
import ReplicaStore
import SyncModel
import SyncProtocol
import TLS

/// Who calls the integration API: an API key of one tenant, with the rights of its role.
public struct APICaller: Sendable {
    public var key: APIKey
    /// The key's rights as the server applies them to a user of its role; `nil` when the server
    /// applies no rights (`SyncServer.Configuration.access` is `nil`).
    public var policy: AccessPolicy?
    /// The replica id the change feed keeps this key's scope under (what it was sent), as a
    /// device's: `apikey-<id>`, which no device id can be.
    public var feedPeer: ReplicaID
}

/// A refusal of an API request, as RFC 9457 problem details carry it.
public struct APIProblem: Error, Sendable, CustomStringConvertible {
    public var status: Int
    /// A short slug under the API's problem namespace: `validation`, `not-found`, `forbidden`.
    public var kind: String
    public var title: String
    public var detail: String
    /// For a validation error: the field and the rule it breaks.
    public var field: String?
    public var rule: String?
    /// For 429: seconds to wait.
    public var retryAfter: Int?
    /// For a refused batch (`POST /v1/batch`): the place, from 0, of the item refused.
    public var index: Int?

    public init(_ status: Int, _ kind: String, _ title: String, _ detail: String, field: String? = nil, rule: String? = nil,
                retryAfter: Int? = nil) {
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.field = field
        self.rule = rule
        self.retryAfter = retryAfter
    }

    public var description: String { "\(status) \(title): \(detail)" }

    /// The same refusal of the item at `index` of a batch, which it names.
    public func at(_ index: Int) -> APIProblem {
        var problem = self
        problem.index = index
        problem.detail = "item \(index): " + detail
        return problem
    }

    /// The record a store's refusal names, when it names one.
    static func record(of error: any Error) -> UUID? {
        switch error {
        case let error as ReplicaStoreError:
            switch error {
            case .invalidRecord(let model): return record(of: model)
            case .accessDenied(let denied): return denied.record
            case .recordNotFound(let id), .recordDeleted(let id), .recordExists(let id): return id
            default: return nil
            }
        case let denied as AccessDenied: return denied.record
        case let error as ModelError:
            switch error {
            case .recordTypeMismatch(let record, _, _), .invalidFieldName(let record, _), .wrongFieldType(let record, _, _, _),
                 .invalidFieldValue(let record, _, _), .dotOutsideVector(let record, _), .dotReused(let record, _, _):
                return UUID(uuidString: record)
            default: return nil
            }
        default: return nil
        }
    }

    /// A store's or the model's refusal as the problem a client gets: the field and the rule
    /// for what the schema or the CRM's rules refused, 403 for rights, 404 for what is not there.
    public static func from(_ error: any Error) -> APIProblem {
        switch error {
        case let problem as APIProblem: return problem
        case let error as ReplicaStoreError:
            switch error {
            case .invalidRecord(let model): return from(model)
            case .accessDenied(let denied): return APIProblem(403, "forbidden", "Not allowed by the key's role", denied.reason)
            case .recordNotFound(let id): return notFound("no record \(id.uuidString.lowercased())")
            case .recordDeleted(let id): return notFound("record \(id.uuidString.lowercased()) is deleted")
            case .recordExists(let id): return APIProblem(409, "exists", "Record exists", "record \(id.uuidString.lowercased()) already exists")
            default: return APIProblem(500, "internal", "Internal error", "\(error)")
            }
        case let denied as AccessDenied:
            return APIProblem(403, "forbidden", "Not allowed by the key's role", denied.reason)
        case let error as ModelError:
            switch error {
            case .unknownRecordType(let type): return notFound("no record type '\(type)'", kind: "unknown-type")
            case let .invalidFieldName(_, field):
                return APIProblem(422, "validation", "Invalid record", "no field '\(field)' in this record type", field: field, rule: "unknown-field")
            case let .wrongFieldType(_, field, expected, found):
                return APIProblem(422, "validation", "Invalid record", "expected \(expected), found \(found)", field: field, rule: "type")
            case let .invalidFieldValue(_, field, reason):
                return APIProblem(422, "validation", "Invalid record", reason, field: field, rule: rule(of: reason))
            default: return APIProblem(422, "validation", "Invalid record", "\(error)")
            }
        case let error as SyncError where error.code == .resyncRequired:
            return APIProblem(410, "cursor-expired", "Cursor no longer valid", "\(error.message); read the feed again from 0")
        default:
            return APIProblem(500, "internal", "Internal error", "\(error)")
        }
    }

    public static func notFound(_ detail: String, kind: String = "not-found") -> APIProblem {
        APIProblem(404, kind, kind == "unknown-type" ? "Unknown record type" : "Not found", detail)
    }

    public static func badRequest(_ detail: String, field: String? = nil, kind: String = "bad-request") -> APIProblem {
        APIProblem(400, kind, "Bad request", detail, field: field)
    }

    /// The rule named by a schema or CRM refusal's words, for clients that branch on it.
    private static func rule(of reason: String) -> String {
        if reason.hasPrefix("no record of type") || reason.contains("is a record of type") || reason.contains("of a record of type") {
            return "reference"
        }
        if reason.hasPrefix("required") { return "required" }
        if reason.contains("is not one of") { return "choices" }
        if reason.contains("below the minimum") || reason.contains("above the maximum") { return "range" }
        if reason.contains("is not a valid") { return "format" }
        return "rule"
    }
}

/// A write through the API, applied as a local write of the server's own replica of the tenant.
public enum APIWrite: Sendable {
    case create(type: String, id: UUID, values: [String: FieldValue])
    /// Only the given fields: one write of those, merged with what devices wrote to the others.
    case update(type: String, id: UUID, values: [String: FieldValue])
    case delete(type: String, id: UUID)

    var type: String {
        switch self { case .create(let type, _, _), .update(let type, _, _), .delete(let type, _): type }
    }

    var verb: String {
        switch self { case .create: "create"; case .update: "update"; case .delete: "delete" }
    }

    var id: UUID {
        switch self { case .create(_, let id, _), .update(_, let id, _), .delete(_, let id): id }
    }
}

/// A write of a batch that the store refused, with its place in the batch.
struct APIBatchFailure: Error {
    var index: Int
    var error: any Error
}

/// The response to a write, kept with the write when it carries an `Idempotency-Key`, so that
/// a retry gets the very response the first attempt got.
public struct APIStoredResponse: Codable, Sendable {
    public var status: Int
    public var body: Data
    /// What the first request was (method, path, body hash): a retry must be the same request.
    public var fingerprint: String

    public init(status: Int, body: Data, fingerprint: String) {
        self.status = status
        self.body = body
        self.fingerprint = fingerprint
    }
}

/// One page of the change feed.
public struct APIFeedPage: Sendable {
    /// Each record changed after the cursor, once, as it is now (deleted ones as tombstones),
    /// without the fields the key's role may not see; in the order of their last change. As
    /// stores keep them, encoded: a page is written out as JSON from these bytes in place.
    public var records: [EncodedRecord]
    /// Records the key may no longer see (its role changed, a record moved out of reach), with why.
    public var evicted: [(id: UUID, type: String, reason: String)]
    /// Where to read on from: every change up to it was in this page or an earlier one.
    public var next: Int64
    /// Whether more changes wait beyond `next` now.
    public var more: Bool
}

extension SyncServer {
    /// The fields the list endpoint may filter on: those the tenant stores index.
    public var apiFilterFields: Set<String> {
        configuration.storeOptions.indexedFields.union(configuration.access?.ownership.indexedFields ?? [])
    }

    /// The caller whose `Authorization: Bearer` key `presented` is, read from the registry now.
    public func apiCaller(key presented: String) async throws -> APICaller {
        let authenticator = self.authenticator
        let defaults = configuration.access?.defaultRoles ?? []
        let found = try await NIOThreadPool.singleton.runIfActive {
            try authenticator.authenticateAPIKey(presented, defaults: defaults)
        }
        guard let (key, subject) = found else {
            throw APIProblem(401, "unauthorized", "Unauthorized", "unknown or revoked API key")
        }
        guard authenticator.isServing(tenant: key.tenant) else {
            throw APIProblem(403, "tenant-not-served", "Tenant not served", "tenant '\(key.tenant)' is not active on this server")
        }
        let policy = configuration.access.map { AccessPolicy(model: $0.ownership, subject: subject) }
        return APICaller(key: key, policy: policy, feedPeer: try ReplicaID("apikey-" + key.id))
    }

    /// Runs `body` with the caller's tenant store leased (opened off the event loops).
    func withTenant<T: Sendable>(_ tenant: String, _ body: (TenantStore) async throws -> T) async throws -> T {
        let tenants = self.tenants
        let store = try await NIOThreadPool.singleton.runIfActive { try tenants.lease(tenant) }
        defer { tenants.release(tenant) }
        return try await body(store)
    }

    /// The record, as the caller may see it; 404 when it does not exist, is deleted, is of
    /// another type or is out of the caller's reach (which it is not told apart from absent).
    public func apiRecord(_ caller: APICaller, type: String, id: UUID) async throws -> RecordState {
        try checkType(type)
        return try await withTenant(caller.key.tenant) { tenant in
            try await tenant.store.perform { store in
                self.visible(try Self.existing(id, type: type, in: store, caller: caller), to: caller)
            }
        }
    }

    /// A page of the live records of `type` the caller may read, those whose indexed fields
    /// hold the given values, in the order of their last change, after `cursor`: the sequence
    /// of the last record of the previous page.
    public func apiList(_ caller: APICaller, type: String, filters: [String: String], after cursor: Int64,
                        limit: Int) async throws -> (records: [RecordState], next: Int64?) {
        try checkType(type)
        let indexed = apiFilterFields
        for field in filters.keys.sorted() {
            guard configuration.schema.types[type]?.fields[field] != nil else {
                throw APIProblem(400, "bad-filter", "Bad filter", "\(type) has no field '\(field)'", field: field, rule: "unknown-field")
            }
            guard indexed.contains(field) else {
                throw APIProblem(400, "bad-filter", "Bad filter", "'\(field)' is not indexed; filter on one of \(indexed.sorted().joined(separator: ", "))",
                                 field: field, rule: "not-indexed")
            }
            // A filter on a field the role may not see would tell its values by what it finds.
            if caller.policy?.subject.role.rights(for: type).hiddenFields.contains(field) == true {
                throw APIProblem(403, "forbidden", "Not allowed by the key's role", "the field \(field) is hidden from \(caller.key.role.rawValue)s", field: field)
            }
        }
        return try await withTenant(caller.key.tenant) { tenant in
            try await tenant.store.perform { store in
                var found: [RecordState] = []
                var last = cursor
                var exhausted = false
                while found.count < limit && !exhausted {
                    let changes: [Change]
                    if let (field, value) = filters.sorted(by: { $0.key < $1.key }).first {
                        // Every match at once (what an index finds is in proportion to it), then the page.
                        changes = try store.indexedChanges(ofType: type, where: field, in: [value])
                            .filter { change in change.sequence > last && filters.allSatisfy { change.state.fields[$0.key]?.value == .text($0.value) } }
                            .sorted { $0.sequence < $1.sequence }
                        exhausted = true
                    } else {
                        changes = try store.liveChanges(ofType: type, after: last, limit: limit)
                        exhausted = changes.count < limit
                    }
                    for change in changes {
                        last = change.sequence
                        if try caller.policy?.mayRead(change.state, lookup: store.record) ?? true {
                            found.append(self.visible(change.state, to: caller))
                            if found.count == limit { exhausted = exhausted && change == changes.last; break }
                        }
                    }
                }
                return (found, found.count == limit && !exhausted ? last : nil)
            }
        }
    }

    /// Applies writes as local writes of the server's replica, in one transaction (all of
    /// them are kept, or none), with the caller's rights checked as the server checks a
    /// device's push and the tenant's validation and rules run as for any write; live
    /// sessions are told once, and devices pull them like any change. One write is a batch of
    /// one: the single-record endpoints and `POST /v1/batch` share this path.
    ///
    /// A refusal of one write of several names its place (`APIProblem.index`), whether the
    /// write itself was refused or the transaction's end found the record it wrote incomplete,
    /// out of the key's rights or breaking a rule.
    ///
    /// With an `idempotency` key, the first response is kept with the writes in the same
    /// transaction; a retry with the same key returns it and writes nothing.
    public func apiWrite(_ caller: APICaller, _ writes: [APIWrite], idempotency: (key: String, fingerprint: String)?,
                         respond: @escaping @Sendable ([RecordState]) throws -> APIStoredResponse) async throws -> (APIStoredResponse, replayed: Bool) {
        for write in writes { try checkType(write.type) }
        let logger = self.logger
        let settingKey = idempotency.map { Self.idempotencySetting(keyID: caller.key.id, idempotencyKey: $0.key) }
        let batched = writes.count > 1
        return try await withTenant(caller.key.tenant) { tenant in
            let (response, replayed, sequence) = try await tenant.store.perform { store -> (APIStoredResponse, Bool, Int64?) in
                if let settingKey, let kept = try store.localSetting(settingKey),
                   let stored = try? JSONDecoder().decode(APIStoredResponse.self, from: kept) {
                    guard stored.fingerprint == idempotency?.fingerprint else {
                        throw APIProblem(422, "idempotency-key-reused", "Idempotency key reused",
                                         "this Idempotency-Key was used for a different request")
                    }
                    return (stored, true, nil)
                }
                store.localWriteCheck = caller.policy
                defer { store.localWriteCheck = nil }
                let before = try store.lastSequence
                let response = try Self.placing(writes, batched: batched) {
                    try store.transaction {
                        var states: [RecordState] = []
                        states.reserveCapacity(writes.count)
                        for (index, write) in writes.enumerated() {
                            do {
                                states.append(try Self.apply(write, in: store, caller: caller))
                            } catch {
                                throw APIBatchFailure(index: index, error: error)
                            }
                        }
                        let response = try respond(states.map { self.visible($0, to: caller) })
                        if let settingKey {
                            var kept = response
                            kept.fingerprint = idempotency?.fingerprint ?? ""
                            try store.setLocalSetting(settingKey, try JSONEncoder().encode(kept))
                        }
                        return response
                    }
                }
                let after = try store.lastSequence
                return (response, false, after > before ? after : nil)
            }
            if let sequence {
                logger.info("api write", metadata: ["tenant": "\(caller.key.tenant)", "key": "\(caller.key.name)", "key_id": "\(caller.key.id)",
                                                    "write": "\(batched ? "batch of \(writes.count)" : writes.first?.verb ?? "")",
                                                    "type": "\(Set(writes.map(\.type)).sorted().joined(separator: ","))", "sequence": "\(sequence)"])
                tenant.announce(sequence, except: nil)
            }
            return (response, replayed)
        }
    }

    /// One write of `apiWrite`, inside its transaction.
    private static func apply(_ write: APIWrite, in store: ReplicaStore, caller: APICaller) throws -> RecordState {
        switch write {
        case let .create(type, id, values):
            return try store.create(type, id: id, values)
        case let .update(type, id, values):
            _ = try existing(id, type: type, in: store, caller: caller)
            return try store.update(id, values)
        case let .delete(type, id):
            _ = try existing(id, type: type, in: store, caller: caller)
            return try store.delete(id)
        }
    }

    /// Runs `body` (the transaction of a batch) and gives a refusal the place of the write it
    /// concerns: the write that threw, or for a check at the transaction's end (required
    /// fields, rules, rights), the first write of the record it names.
    private static func placing<T>(_ writes: [APIWrite], batched: Bool, _ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let failure as APIBatchFailure {
            throw batched ? APIProblem.from(failure.error).at(failure.index) : failure.error
        } catch {
            guard batched, let record = APIProblem.record(of: error), let index = writes.firstIndex(where: { $0.id == record }) else { throw error }
            throw APIProblem.from(error).at(index)
        }
    }

    /// What the local settings that keep responses for `Idempotency-Key` retries start with;
    /// housekeeping purges them past their horizon.
    public static let idempotencyPrefix = "api.idempotency."

    /// The local setting an `Idempotency-Key` of an API key keeps its first response under.
    static func idempotencySetting(keyID: String, idempotencyKey: String) -> String {
        idempotencyPrefix + keyID + "." + Crypto.hex(Crypto.sha256(Array(idempotencyKey.utf8)))
    }

    /// The next page of the change feed after `after` (the tenant's sequence), as the caller
    /// may see it: the scoped pull a device of the key's role would get (`scopedPull`), or
    /// every change for a role that sees everything. With `wait`, an empty page waits up to
    /// that long for the next change announced to live sessions, then reads again.
    public func apiChanges(_ caller: APICaller, after: Int64, limit: Int, wait: Duration) async throws -> APIFeedPage {
        try await withTenant(caller.key.tenant) { tenant in
            var page = try await feedPage(caller, tenant: tenant, after: after, limit: limit)
            let deadline = ContinuousClock.now + wait
            while page.records.isEmpty && page.evicted.isEmpty && ContinuousClock.now < deadline && !Task.isCancelled {
                await tenant.waitForChange(after: page.next, timeout: deadline - ContinuousClock.now)
                page = try await feedPage(caller, tenant: tenant, after: after, limit: limit)
            }
            return page
        }
    }

    private func feedPage(_ caller: APICaller, tenant: TenantStore, after: Int64, limit: Int) async throws -> APIFeedPage {
        try await tenant.store.perform { store in
            let sequence = try store.lastSequence
            guard after <= sequence else {
                throw APIProblem(400, "bad-cursor", "Bad cursor", "cursor \(after) is ahead of the tenant's sequence \(sequence)")
            }
            try Self.checkNotPurged(after: after, in: store)
            if let policy = caller.policy,
               let batch = try self.scopedPull(after: after, limit: limit, store: store, device: caller.feedPeer, policy: policy) {
                let records = try batch.records.map { record in
                    try record.id.withUnsafeBytes { id in
                        try EncodedRecord(idBytes: id, type: record.type, vector: Array(record.vector), state: Array(record.state))
                    }
                }
                let evicted = batch.evictions.compactMap { eviction in
                    eviction.recordID.withUnsafeBytes { UUID(bytes: $0) }.map { (id: $0, type: eviction.recordType, reason: eviction.reason) }
                }
                return APIFeedPage(records: records, evicted: evicted, next: Int64(batch.lastSequence), more: batch.remainingRecords > 0)
            }
            let changes = try store.encodedChanges(after: after, limit: limit)
            let next = changes.count < limit ? max(changes.last?.sequence ?? after, sequence) : changes.last?.sequence ?? after
            return APIFeedPage(records: changes.map(\.record), evicted: [], next: next, more: next < sequence)
        }
    }

    private func checkType(_ type: String) throws {
        guard configuration.schema.types[type] != nil else {
            throw APIProblem.notFound("no record type '\(type)'; this tenant has \(configuration.schema.types.keys.sorted().joined(separator: ", "))",
                                      kind: "unknown-type")
        }
    }

    /// The live record `id` of `type` that the caller may read; 404 otherwise, alike whether
    /// it is missing or out of reach, so a key learns nothing of records it may not see.
    private static func existing(_ id: UUID, type: String, in store: ReplicaStore, caller: APICaller) throws -> RecordState {
        guard let record = try store.record(id), record.type == type, !record.isDeleted,
              try caller.policy?.mayRead(record, lookup: store.record) ?? true else {
            throw APIProblem.notFound("no \(type) \(id.uuidString.lowercased())")
        }
        return record
    }

    /// The record without the fields the caller's role may not see, as a device's pull strips them.
    func visible(_ record: RecordState, to caller: APICaller) -> RecordState {
        caller.policy.map { stripped(record, $0) } ?? record
    }
}
