import CRM
import Foundation
import RapportDevice
import SyncModel
import TestSupport
import Testing
import TLS
import TestScheduling

@Suite struct DeviceHomeTests {
    /// A device's settings with a freshly generated CA written to `dir`.
    static func settings(in dir: TemporaryDirectory, deviceID: String? = "device-1") throws -> DeviceSettings {
        let ca = dir.path("some-ca.pem")
        try DevCertificates.generate().caCertificatePEM.write(toFile: ca, atomically: true, encoding: .utf8)
        return DeviceSettings(server: ServerAddress(host: "127.0.0.1", port: 7443), tenant: "acme",
                              secret: Array("s3cret".utf8), caFile: ca, deviceID: deviceID)
    }

    @Test(.blocking, arguments: [
        ("sync.example.com:7443", "sync.example.com", 7443), ("127.0.0.1:1", "127.0.0.1", 1),
        ("example.com", "example.com", 7443), ("[::1]:9000", "::1", 9000), ("[::1]", "::1", 7443),
    ])
    func parsesServerAddresses(text: String, host: String, port: Int) throws {
        #expect(try ServerAddress(parsing: text) == ServerAddress(host: host, port: port))
    }

    @Test(.blocking, arguments: ["", ":7443", "host:", "host:0", "host:70000", "host:x", "::1", "[::1", "[::1]x", "a b:1"])
    func refusesBadServerAddresses(text: String) {
        #expect(throws: DeviceError.self) { try ServerAddress(parsing: text) }
    }

    @Test(.blocking) func initializeWritesProfileSecretStoreAndCA() throws {
        let dir = try TemporaryDirectory()
        let home = DeviceHome(path: dir.path("device"))
        let profile = try home.initialize(Self.settings(in: dir))
        #expect(profile.deviceID == "device-1")
        #expect(profile.serverName == "127.0.0.1")
        #expect(profile.caFile == "ca.pem")
        #expect(try home.loadProfile() == profile)
        #expect(try home.loadSecret() == Array("s3cret".utf8))
        #expect(FileManager.default.fileExists(atPath: home.storePath))
        #expect(FileManager.default.fileExists(atPath: home.caPath))

        let mode = try FileManager.default.attributesOfItem(atPath: home.secretPath)[.posixPermissions] as? Int
        #expect(mode == 0o600)
        let profileText = try String(contentsOfFile: home.profilePath, encoding: .utf8)
        #expect(!profileText.contains(Crypto.hex(Array("s3cret".utf8))))
        #expect(profileText.contains("\"device_id\""))

        let device = try Device.open(home)
        defer { device.close() }
        #expect(device.store.replicaID == "device-1")
    }

    @Test(.blocking) func profileRoundTrips() throws {
        let dir = try TemporaryDirectory()
        let home = DeviceHome(path: dir.path("h"))
        try FileManager.default.createDirectory(atPath: home.path, withIntermediateDirectories: true)
        let profile = DeviceProfile(deviceID: "d", host: "::1", port: 1, serverName: "sync.example", tenant: "t",
                                    caFile: nil, pin: String(repeating: "ab", count: 32), createdAt: "2025-01-01T00:00:00Z")
        try home.saveProfile(profile)
        #expect(try home.loadProfile() == profile)
        #expect(profile.server.description == "[::1]:1")
    }

    @Test(.blocking) func refusesToOverwriteUnlessForced() throws {
        let dir = try TemporaryDirectory()
        let home = DeviceHome(path: dir.path("device"))
        try home.initialize(Self.settings(in: dir))
        let error = #expect(throws: DeviceError.self) { try home.initialize(Self.settings(in: dir, deviceID: "device-2")) }
        #expect(error?.status == .usage)
        #expect(try home.loadProfile().deviceID == "device-1")

        let replaced = try home.initialize(Self.settings(in: dir, deviceID: "device-2"), force: true)
        #expect(replaced.deviceID == "device-2")
        let device = try Device.open(home)
        defer { device.close() }
        #expect(device.store.replicaID == "device-2")
    }

    @Test(.blocking) func randomDeviceIDWhenNoneIsGiven() throws {
        let dir = try TemporaryDirectory()
        let profile = try DeviceHome(path: dir.path("d")).initialize(Self.settings(in: dir, deviceID: nil))
        #expect(UUID(uuidString: profile.deviceID) != nil)
    }

    @Test(.blocking) func refusesBadSettingsWithoutWritingAnything() throws {
        let dir = try TemporaryDirectory()
        let good = try Self.settings(in: dir)
        var cases: [DeviceSettings] = []
        var noTrust = good; noTrust.caFile = nil; noTrust.pin = nil; cases.append(noTrust)
        var badPin = good; badPin.pin = "abc"; cases.append(badPin)
        var badCA = good; badCA.caFile = dir.path("missing.pem"); cases.append(badCA)
        var notPEM = good; notPEM.caFile = dir.path("not.pem"); cases.append(notPEM)
        try "hello".write(toFile: dir.path("not.pem"), atomically: true, encoding: .utf8)
        var badTenant = good; badTenant.tenant = "Acme Corp"; cases.append(badTenant)
        var badID = good; badID.deviceID = "no spaces"; cases.append(badID)
        var noSecret = good; noSecret.secret = []; cases.append(noSecret)
        for settings in cases {
            let home = DeviceHome(path: dir.path("device"))
            let error = #expect(throws: DeviceError.self) { try home.initialize(settings) }
            #expect(error?.status == .usage)
            #expect(!home.exists)
        }
    }

    @Test(.blocking) func pinsAreNormalized() throws {
        let colons = stride(from: 0, to: 32, by: 1).map { _ in "AB" }.joined(separator: ":")
        #expect(try DeviceHome.normalizePin(colons) == String(repeating: "ab", count: 32))
        #expect(throws: DeviceError.self) { try DeviceHome.normalizePin(String(repeating: "g", count: 64)) }
    }

    @Test(.blocking) func secretsAreHex() throws {
        #expect(try DeviceHome.decodeSecret("0aff\n", source: "x") == [0x0A, 0xFF])
        #expect(throws: DeviceError.self) { try DeviceHome.decodeSecret("not hex", source: "x") }
        #expect(throws: DeviceError.self) { try DeviceHome.decodeSecret("\n", source: "x") }
    }

    @Test(.blocking) func homeResolution() {
        #expect(DeviceHome.resolve(explicit: "/a/b", environment: ["RAPPORT_HOME": "/c"]).path == "/a/b")
        #expect(DeviceHome.resolve(explicit: nil, environment: ["RAPPORT_HOME": "/c"]).path == "/c")
        #expect(DeviceHome.resolve(explicit: nil, environment: [:]).path.hasSuffix("/rapport-device"))
    }

    @Test(.blocking) func openingWhereThereIsNoDeviceIsNotFound() throws {
        let dir = try TemporaryDirectory()
        let error = #expect(throws: DeviceError.self) { try Device.open(DeviceHome(path: dir.path("none"))) }
        #expect(error?.status == .notFound)
    }
}
