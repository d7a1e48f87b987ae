import ArgumentParser
import Foundation
import RapportDevice
import Registry

struct DeviceCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "device",
        abstract: "Enroll, list and revoke devices.",
        subcommands: [Enroll.self, List.self, Revoke.self])

    static func json(_ device: RegisteredDevice) -> JSONValue {
        .object([
            "id": .string(device.id), "tenant": .string(device.tenant), "number": .integer(device.number), "user": .string(device.user),
            "name": .string(device.name), "status": .string(device.status.rawValue),
            "enrolled_at": jsonDate(device.enrolledAt), "revoked_at": jsonDate(device.revokedAt),
            "last_seen": jsonDate(device.lastSeen), "last_checkpoint": device.lastCheckpoint.map { JSONValue.integer($0) } ?? .null,
        ])
    }

    struct Enroll: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Make a one-time enrollment code for a new device of a user.",
            discussion: """
                The device presents the code once (rapport init --enroll CODE, or \
                RapportClient.enroll) and receives its id and secret. The code expires unused \
                after --valid-for; only its hash is stored, so it cannot be shown again.
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("The e-mail of the user the device belongs to.", valueName: "email"))
        var user: String
        @Option(help: ArgumentHelp("How long the code stays valid: 90s, 30m, 24h, 7d.", valueName: "duration"))
        var validFor = "24h"

        func run() throws {
            guard let validity = parseDuration(validFor) else {
                throw CtlFailure(.usage, "--valid-for \(validFor): expected a number with s, m, h or d, such as 24h")
            }
            let registry = try common.registry()
            defer { registry.close() }
            let ticket = try common.audited(registry, "device enroll", tenant: tenant, detail: "\(user) valid \(validFor)") {
                try registry.issueEnrollmentCode(tenant: tenant, user: user, validFor: validity)
            }
            common.emit(text: """
                enrollment code for \(ticket.user) in tenant \(ticket.tenant), valid until \(iso(ticket.expiresAt)), once:
                  \(ticket.code)
                on the device: rapport init --server HOST:PORT --tenant \(ticket.tenant) --enroll \(ticket.code) --ca CA.pem

                """,
                json: .object(["code": .string(ticket.code), "tenant": .string(ticket.tenant), "user": .string(ticket.user),
                               "expires_at": jsonDate(ticket.expiresAt)]))
        }
    }

    struct List: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "List a tenant's devices, with when each last synced.",
            discussion: """
                NO is the device's number in the tenant (1, 2, 3, ... in enrollment order, never \
                reused): the cases a device opens are numbered C<NO>-0001, C<NO>-0002, ...
                """)
        @OptionGroup var common: CommonOptions
        @Option(help: "The tenant.")
        var tenant: String
        @Option(help: ArgumentHelp("Only this user's devices.", valueName: "email"))
        var user: String?

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let devices = try registry.devices(tenant: tenant, user: user)
            let rows = devices.map { (device: RegisteredDevice) -> [String] in
                [String(device.number), device.id, device.user, device.name, device.status.rawValue, iso(device.lastSeen),
                 device.lastCheckpoint.map { String($0) } ?? "-"]
            }
            common.emit(text: Output.table(["NO", "DEVICE", "USER", "NAME", "STATUS", "LAST SEEN", "CHECKPOINT"], rows),
                        json: .array(devices.map(DeviceCommand.json)))
        }
    }

    struct Revoke: ParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Revoke a device: its live sessions end within seconds and it can never authenticate again.")
        @OptionGroup var common: CommonOptions
        @Argument(help: "The device id (see device list).")
        var device: String
        @Option(help: "The tenant, to guard against revoking another tenant's device by mistake.")
        var tenant: String?

        func run() throws {
            let registry = try common.registry()
            defer { registry.close() }
            let owner = try registry.device(device)?.tenant ?? tenant
            try common.audited(registry, "device revoke", tenant: owner, detail: device) {
                try registry.revokeDevice(device, tenant: tenant)
            }
            guard let revoked = try registry.device(device) else { throw RegistryError.noSuchDevice(device) }
            common.emit(text: "revoked device \(revoked.id) of \(revoked.user) in tenant \(revoked.tenant)\n", json: DeviceCommand.json(revoked))
        }
    }
}

/// `90s`, `30m`, `24h`, `7d`.
func parseDuration(_ text: String) -> Duration? {
    guard let unit = text.last, let amount = Int(text.dropLast()), amount > 0 else { return nil }
    let seconds: Int? = switch unit {
    case "s": amount
    case "m": amount * 60
    case "h": amount * 3600
    case "d": amount * 86_400
    default: nil
    }
    return seconds.map { .seconds($0) }
}
