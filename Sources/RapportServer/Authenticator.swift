import Foundation
import SyncModel
import SyncProtocol
import TLS

/// Decides whether a device may open a session for a tenant.
public protocol Authenticator: Sendable {
    /// Returns normally when the credential is good; otherwise throws a `SyncError` whose code
    /// tells the device what is wrong (unknown tenant, bad credential, suspended, revoked).
    func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws
}

/// Tenant ids are slugs: they name files in the data directory, so nothing else may pass.
public enum TenantID {
    /// 1 to 63 characters of `a-z 0-9 -`, not starting or ending with `-`.
    public static func isValid(_ slug: String) -> Bool {
        let bytes = Array(slug.utf8)
        guard (1...63).contains(bytes.count), bytes.first != UInt8(ascii: "-"), bytes.last != UInt8(ascii: "-") else { return false }
        return bytes.allSatisfy { ($0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z")) || ($0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9")) || $0 == UInt8(ascii: "-") }
    }
}

/// Development credentials, until the tenant registry exists: one shared secret per tenant,
/// kept as its SHA-256 in `<data>/dev-tenants` (`slug hex-sha256` per line).
///
/// On first start it creates the tenant `dev` with a random 256-bit secret and writes the secret
/// to `<data>/dev-secret` (readable by its owner only) so a local device can connect.
public struct DevAuthenticator: Authenticator {
    /// Tenant slug to SHA-256 of its secret.
    let secretHashes: [String: [UInt8]]

    /// Where the generated secret of the `dev` tenant is written.
    public static func secretPath(in dataDirectory: String) -> String { dataDirectory + "/dev-secret" }

    /// Loads `<data>/dev-tenants`, creating it (and the `dev` tenant) when missing.
    public init(dataDirectory: String) throws {
        let path = dataDirectory + "/dev-tenants"
        if !FileManager.default.fileExists(atPath: path) {
            let secret = try Crypto.randomBytes(32)
            try Self.writePrivate(Crypto.hex(secret) + "\n", to: Self.secretPath(in: dataDirectory))
            try Self.writePrivate("dev \(Crypto.hex(Crypto.sha256(secret)))\n", to: path)
        }
        var hashes: [String: [UInt8]] = [:]
        let text = try String(contentsOfFile: path, encoding: .utf8)
        for (number, line) in text.split(separator: "\n").enumerated() where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, TenantID.isValid(String(parts[0])),
                  let hash = Crypto.bytes(fromHex: String(parts[1])), hash.count == 32 else {
                throw CocoaError(.fileReadCorruptFile, userInfo: [NSFilePathErrorKey: path, NSLocalizedDescriptionKey: "\(path) line \(number + 1): expected 'tenant-slug sha256-hex'"])
            }
            hashes[String(parts[0])] = hash
        }
        secretHashes = hashes
    }

    /// Credentials held in memory, for tests.
    public init(secrets: [String: [UInt8]]) {
        secretHashes = secrets.mapValues { Crypto.sha256($0) }
    }

    public func authenticate(tenant: String, device: ReplicaID, secret: [UInt8]) throws {
        guard let expected = secretHashes[tenant] else {
            throw SyncError(.unknownTenant, "no tenant '\(tenant.prefix(64))' on this server")
        }
        guard Crypto.constantTimeEquals(Crypto.sha256(secret), expected) else {
            throw SyncError(.authenticationFailed, "wrong credential for tenant '\(tenant)'")
        }
    }

    static func writePrivate(_ text: String, to path: String) throws {
        guard FileManager.default.createFile(atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: 0o600]) else {
            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path])
        }
    }
}
