import ArgumentParser
import CRM
import Dispatch
import Foundation
import Logging
import RapportServer

/// The Rapport server: serves sync sessions over TLS for every tenant in a data directory.
@main
struct Rapportd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "rapportd",
        abstract: "Serve Rapport sync sessions over TLS.",
        discussion: """
            With no arguments it serves ./rapport-data on 127.0.0.1:7443 with a development \
            certificate and a development tenant 'dev', both made on first start.
            """)

    @Option(help: "Address to listen on.")
    var host = "127.0.0.1"

    @Option(help: "Port to listen on (0 picks a free one).")
    var port = 7443

    @Option(name: .customLong("data"), help: "Data directory: tenant stores, credentials, dev certificate.")
    var dataDirectory = "rapport-data"

    @Option(name: .customLong("cert"), help: "PEM certificate chain (leaf first). Without it a dev certificate is used.")
    var certificateChain: String?

    @Option(name: .customLong("key"), help: "PEM private key of --cert.")
    var privateKey: String?

    @Option(help: "trace, debug, info, notice, warning, error or critical.")
    var logLevel: String = "info"

    func validate() throws {
        guard (certificateChain == nil) == (privateKey == nil) else {
            throw ValidationError("--cert and --key go together")
        }
        guard Logger.Level(rawValue: logLevel) != nil else { throw ValidationError("unknown log level '\(logLevel)'") }
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "rapportd")
        let data = URL(fileURLWithPath: dataDirectory).standardizedFileURL.path
        var config = SyncServer.Configuration(dataDirectory: data, host: host, port: port,
                                              schema: CRMSchema.current, schemaVersion: CRMSchema.version)
        config.recordRules = CRMRules()
        config.certificateChainPath = certificateChain
        config.privateKeyPath = privateKey
        let server = try SyncServer(configuration: config, logger: logger)
        let boundPort = try await server.start()

        var banner = "rapportd serving \(data) on \(host):\(boundPort)\n"
        if let ca = server.devCertificateAuthorityPath {
            banner += "development CA for clients: \(ca)\n"
        }
        let secretPath = DevAuthenticator.secretPath(in: data)
        if FileManager.default.fileExists(atPath: secretPath) {
            banner += "development tenant 'dev', secret in: \(secretPath)\n"
        }
        // Unbuffered, so a supervisor or script reading stdout sees the port at once.
        FileHandle.standardOutput.write(Data(banner.utf8))
        let signal = await Self.waitForTerminationSignal()
        logger.info("received \(signal)")
        await server.shutdown()
    }

    /// Waits for SIGINT or SIGTERM, which then no longer kill the process: shutdown is ours.
    static func waitForTerminationSignal() async -> String {
        let names = [SIGINT: "SIGINT", SIGTERM: "SIGTERM"]
        let (stream, continuation) = AsyncStream<String>.makeStream()
        var sources: [any DispatchSourceSignal] = []
        for (number, name) in names {
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { continuation.yield(name) }
            source.resume()
            sources.append(source)
        }
        for await name in stream {
            sources.forEach { $0.cancel() }
            return name
        }
        return "end of signal stream"
    }
}
