import SyncModel
import TestSupport
import Testing

let a = try! ReplicaID("A"), b = try! ReplicaID("B"), c = try! ReplicaID("C")

func vv(_ entries: [ReplicaID: UInt64]) -> VersionVector { try! VersionVector(entries) }
func dot(_ replica: ReplicaID, _ counter: UInt64) -> Dot { try! Dot(replica: replica, counter: counter) }

@Suite struct VersionVectorTests {
    @Test func compareCoversAllFourOrders() {
        #expect(vv([a: 1, b: 2]).compare(vv([a: 1, b: 2])) == .equal)
        #expect(vv([a: 1]).compare(vv([a: 1, b: 1])) == .before)
        #expect(vv([a: 2, b: 1]).compare(vv([a: 1])) == .after)
        #expect(vv([a: 2]).compare(vv([b: 1])) == .concurrent)
        #expect(VersionVector().compare(VersionVector()) == .equal)
        #expect(VersionVector().compare(vv([c: 1])) == .before)
    }

    @Test func mergeTakesThePointwiseMaximum() {
        let merged = vv([a: 3, b: 1]).merged(vv([b: 4, c: 2]))
        #expect(merged == vv([a: 3, b: 4, c: 2]))
        #expect(merged.covers(vv([a: 3, b: 1])))
        #expect(merged.covers(vv([b: 4, c: 2])))
    }

    @Test func containsIsTheCausalityTest() {
        let v = vv([a: 5])
        #expect(v.contains(dot(a, 5)))
        #expect(v.contains(dot(a, 1)))
        #expect(!v.contains(dot(a, 6)))
        #expect(!v.contains(dot(b, 1)))
    }

    @Test func zeroEntriesMeanNothingSeen() {
        #expect(vv([a: 0]) == VersionVector())
    }

    @Test func negativeAndOverflowingCountersAreRefused() {
        #expect(throws: ModelError.invalidCounter(replica: "A", value: "-1")) {
            try VersionVector(signed: [("A", -1)])
        }
        let tooBig = UInt64(Int64.max) + 1
        #expect(throws: ModelError.invalidCounter(replica: "A", value: String(tooBig))) {
            try VersionVector([a: tooBig])
        }
        #expect(throws: ModelError.self) { try Dot(replica: a, counter: 0) }
        #expect(throws: ModelError.self) { try Dot(replica: a, counter: tooBig) }
    }

    @Test func replicaIDsAreValidated() {
        #expect(throws: ModelError.self) { try ReplicaID("") }
        #expect(throws: ModelError.self) { try ReplicaID("has space") }
        #expect(throws: ModelError.self) { try ReplicaID("../etc") }
        #expect(throws: ModelError.self) { try ReplicaID(String(repeating: "x", count: 65)) }
        #expect(ReplicaID.random() != ReplicaID.random())
        #expect(throws: Never.self) { try ReplicaID(ReplicaID.random().rawValue) }
    }
}

@Suite struct HybridLogicalClockTests {
    @Test func timestampsAdvanceWithTheWallClock() {
        let wall = ManualClock(1_000)
        var clock = HybridLogicalClock(wallClock: { wall.read() })
        let t1 = clock.now()
        #expect(t1 == HLCTimestamp(wallMilliseconds: 1_000, logical: 0))
        wall.set(2_000)
        #expect(clock.now() == HLCTimestamp(wallMilliseconds: 2_000, logical: 0))
    }

    @Test func sameMillisecondUsesTheLogicalCounter() {
        let wall = ManualClock(1_000)
        var clock = HybridLogicalClock(wallClock: { wall.read() })
        let t1 = clock.now(), t2 = clock.now()
        #expect(t2 > t1)
        #expect(t2.wallMilliseconds == 1_000 && t2.logical == 1)
    }

    @Test func wallClockGoingBackwardsNeverMakesTimestampsGoBackwards() {
        let wall = ManualClock(10_000)
        var clock = HybridLogicalClock(wallClock: { wall.read() })
        let before = clock.now()
        wall.set(5_000)  // NTP stepped the clock back
        let after = clock.now()
        #expect(after > before)
        #expect(after.wallMilliseconds == 10_000)
    }

    @Test func observingARemoteTimestampOrdersLaterWritesAfterIt() {
        let wall = ManualClock(1_000)
        var clock = HybridLogicalClock(wallClock: { wall.read() })
        let remote = HLCTimestamp(wallMilliseconds: 1_500, logical: 7)
        let adopted = clock.observe(remote)
        #expect(adopted)
        #expect(clock.now() > remote)
    }

    @Test func aPeerFarInTheFutureCannotDragTheClockAlong() {
        let wall = ManualClock(1_000)
        var clock = HybridLogicalClock(maxForwardDriftMilliseconds: 60_000, wallClock: { wall.read() })
        let wild = HLCTimestamp(wallMilliseconds: 1_000 + 365 * 86_400_000, logical: 0)
        let adopted = clock.observe(wild)
        #expect(!adopted)
        #expect(clock.now().wallMilliseconds == 1_000)
    }

    @Test func exhaustedLogicalCounterBorrowsTheNextMillisecond() {
        let wall = ManualClock(1_000)
        let start = HLCTimestamp(wallMilliseconds: 1_000, logical: HLCTimestamp.maxLogical)
        var clock = HybridLogicalClock(last: start, wallClock: { wall.read() })
        let next = clock.now()
        #expect(next > start)
        #expect(next == HLCTimestamp(wallMilliseconds: 1_001, logical: 0))
    }

    @Test func negativeStoredTimestampsAreRefused() {
        #expect(throws: ModelError.self) { try HLCTimestamp(signed: -5) }
    }
}
