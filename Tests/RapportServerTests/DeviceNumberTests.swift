import CRM
import Foundation
import RapportClient
import ReplicaStore
import TestScheduling
import TestSupport
import Testing

/// A device learns its number in the tenant (the prefix of the case numbers it makes offline)
/// from a real `rapportd`, and keeps it in its store's local settings for the CRM to read.
@Suite(.serialized, .timeLimit(.minutes(10)), .ownThread) struct DeviceNumberTests {
    /// The number a store keeps, as the CRM reads it.
    func keptNumber(_ store: ReplicaStore) throws -> String? {
        try store.localSetting(CaseNumbers.deviceNumberSetting).map { String(decoding: $0, as: UTF8.self) }
    }

    @Test func twoEnrolledDevicesKeepDistinctNumbersInTheirStores() async throws {
        let dir = try TemporaryDirectory()
        let operated = try await OperatedServer(dir)
        defer { operated.server.stop() }

        // The laptop enrolls as a user does, `rapport init --enroll`: the number comes in
        // Enrolled and is in the new store before it ever syncs.
        let ticket = try await operated.ctl.run(["device", "enroll", "--tenant", "acme", "--user", "anna@acme.example", "--json"])
        let code = try #require((ticket.json as? [String: Any])?["code"] as? String)
        let home = dir.path("laptop")
        let initialized = try OwnerOnlyFilesTests().rapport([
            "init", "--home", home, "--server", "127.0.0.1:\(operated.server.port)", "--tenant", "acme",
            "--enroll", code, "--ca", operated.data + "/tls/ca.pem",
        ])
        #expect(initialized.status == 0, "\(initialized.output)")
        do {
            let laptop = try ReplicaStore(path: home + "/replica.sqlite", options: .crm())
            defer { laptop.close() }
            #expect(try keptNumber(laptop) == "1")
            // What the number is for: the laptop's first case, opened offline.
            let opened = try CRMStore(store: laptop, user: "anna@acme.example").create(ServiceCase(number: "", subject: "printer"))
            #expect(try laptop.record(opened.id)?.text("number") == "C1-0001")
        }
        // `rapport status` tells the user which number and which user the device has.
        let status = try OwnerOnlyFilesTests().rapport(["status", "--home", home, "--json"])
        let fields = try #require(try JSONSerialization.jsonObject(with: Data(status.output.utf8)) as? [String: Any], "\(status.output)")
        #expect(fields["device_number"] as? String == "1" && fields["user"] as? String == "anna@acme.example", "\(fields)")

        // The phone's store is made without the number, as by a client older than numbers:
        // it learns it from Welcome at its first sync.
        let phone = try await operated.enroll("phone")
        #expect(try phone.local(keptNumber) == nil)
        try await phone.sync()
        #expect(try phone.local(keptNumber) == "2")

        // A number stays with its device: a server that sends none leaves it as it is.
        try phone.local { try RapportClient.keepDeviceNumber(nil, on: $0) }
        try phone.local { try RapportClient.keepDeviceNumber(0, on: $0) }
        #expect(try phone.local(keptNumber) == "2")

        // Revoking the laptop does not free its number.
        let list = try await operated.ctl.run(["device", "list", "--tenant", "acme", "--json"])
        let devices = try #require(list.json as? [[String: Any]])
        #expect(devices.compactMap { $0["number"] as? Int } == [1, 2])
        let laptopID = try #require(devices.first { $0["number"] as? Int == 1 }?["id"] as? String)
        await #expect(try operated.ctl.run(["device", "revoke", laptopID]).status == 0)
        let tablet = try await operated.enroll("tablet")
        try await tablet.sync()
        #expect(try tablet.local(keptNumber) == "3")

        let text = try await operated.ctl.run(["device", "list", "--tenant", "acme"])
        #expect(text.status == 0)
        let header = try #require(text.output.split(separator: "\n").first)
        #expect(header.hasPrefix("NO"), "\(text.output)")
        let numbers = text.output.split(separator: "\n").dropFirst().compactMap { $0.split(separator: " ").first }
        #expect(numbers == ["1", "2", "3"], "\(text.output)")
    }
}
