import Foundation
import TestScheduling
import TestSupport
import Testing

/// A long-poll of the change feed whose client goes away, against a real `rapportd` (its
/// metrics endpoint counts the long-polls waiting) and a real `curl` killed mid-wait.
@Suite(.serialized, .ownThread) struct APILongPollTests {
    @Test func aLongPollWhoseClientIsKilledStopsWaiting() async throws {
        let server = try APIServer(arguments: ["--metrics", "127.0.0.1:0"])
        let metrics = try MetricsClient(banner: server.process.banner)
        let key = try server.key(name: "erp", role: "admin")
        let cursor = try #require(try server.client(key).request("GET", "/v1/changes?after=0&limit=1000").json["next"] as? Int)
        #expect(try await metrics.scrape()["rapport_api_feed_waiting"] == 0)

        // The longest wait there is; the client is killed long before it ends.
        let curl = try ChildProcess("/usr/bin/curl", ["-sS", "--max-time", "120", "--cacert", server.caFile, "-H", "Authorization: Bearer \(key)",
                                                       "https://127.0.0.1:\(server.apiPort)/v1/changes?after=\(cursor)&wait=60"])
        defer { curl.send(SIGKILL) }
        try await waitFor("the long-poll to wait", within: .seconds(50)) { try await metrics.scrape()["rapport_api_feed_waiting"] == 1 ? true : nil }
        curl.send(SIGKILL)
        try #require(curl.waitForExit(within: .seconds(60)), "the killed curl did not exit")
        // Back to none well before the 60 s wait would have ended it.
        try await waitFor("the waiter to go with its client", within: .seconds(40)) {
            try await metrics.scrape()["rapport_api_feed_waiting"] == 0 ? true : nil
        }
        // The feed still serves, and a long-poll still answers at the next change.
        let api = server.client(key)
        // The long-poll waits in curl for up to 60 s: on a thread of its own, not one of the
        // shared pool's, which every in-process session of the run shares.
        let poll = Task { try await offThePool { try api.request("GET", "/v1/changes?after=\(cursor)&wait=60") } }
        try await waitFor("the second long-poll to wait", within: .seconds(50)) {
            try await metrics.scrape()["rapport_api_feed_waiting"] == 1 ? true : nil
        }
        #expect(try api.request("POST", "/v1/records/account", json: ["fields": ["name": "Wakes it"]]).status == 201)
        let reply = try await poll.value
        #expect(reply.status == 200 && (reply.json["changes"] as? [Any])?.count == 1, "\(reply)")
        #expect(try await metrics.scrape()["rapport_api_feed_waiting"] == 0)
    }
}
