extension RecordState {
    /// Checks that a state pushed by `device` carries no write it could not have made or
    /// received: every write under another replica's id must be one the receiver already has
    /// (or an older one its own state supersedes). Without this a device could forge writes in a
    /// colleague's name, or win every merge with a made-up timestamp on a colleague's dot.
    ///
    /// An honest device only ever holds other replicas' writes that it pulled from the receiver,
    /// whose state only moves forward, so honest states always pass.
    ///
    /// - Parameter stored: the receiver's state of the record, `nil` when it has none.
    public func checkAuthorship(by device: ReplicaID, against stored: RecordState?) throws(ModelError) {
        try checkAuthorship(against: stored, as: "a device may only write under its own id \(device)") { $0 == device }
    }

    /// The same check for a peer that may carry the writes of several replicas: a branch relays
    /// those of the devices it serves (SPEC.md 6.2). `mayCarry` says whose new writes the peer
    /// may bring; writes of anyone else must be ones the receiver already has.
    ///
    /// - Parameter rule: what the peer may do, for the refusal's reason.
    public func checkAuthorship(against stored: RecordState?, as rule: String,
                                mayCarry: (ReplicaID) -> Bool) throws(ModelError) {
        let record = id.uuidString
        func forged(_ what: String) -> ModelError {
            .invalidFieldValue(record: record, field: what, reason: "carries a write of another replica that the server never had; \(rule)")
        }
        for (replica, counter) in vector.sortedEntries where !mayCarry(replica) {
            guard let stored, stored.vector[replica] >= counter else { throw forged("(version \(replica):\(counter))") }
        }
        guard let stored else { return }
        if !mayCarry(liveness.dot.replica), liveness != stored.liveness, !stored.liveness.register.beats(liveness.register) {
            throw forged("(existence)")
        }
        for (name, field) in fields {
            switch field {
            case .register(let mine) where !mayCarry(mine.dot.replica):
                guard case .register(let theirs)? = stored.fields[name], mine == theirs || theirs.beats(mine) else { throw forged(name) }
            case .counter(let mine):
                let theirs: CounterState? = if case .counter(let c)? = stored.fields[name] { c } else { nil }
                for (replica, contribution) in mine.contributions where !mayCarry(replica) {
                    guard let known = theirs?.contributions[replica],
                          known.lastCounter > contribution.lastCounter || known == contribution else { throw forged(name) }
                }
            default:
                break
            }
        }
    }
}

extension RecordState {
    /// Whether this state holds a write of `replica` newer than its `counter`: the record's
    /// existence, a field, or a counter contribution under that id. A dot that is only in the
    /// vector (its write was overwritten since, as when a branch puts back what upstream
    /// refused) brings nothing of `replica` to check.
    public func holdsWrite(of replica: ReplicaID, after counter: UInt64) -> Bool {
        if liveness.dot.replica == replica && liveness.dot.counter > counter { return true }
        for field in fields.values {
            switch field {
            case .register(let register):
                if register.dot.replica == replica && register.dot.counter > counter { return true }
            case .counter(let state):
                if let contribution = state.contributions[replica], contribution.lastCounter > counter { return true }
            }
        }
        return false
    }
}
