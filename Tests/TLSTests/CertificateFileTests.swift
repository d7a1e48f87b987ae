import Glibc
import Testing
import TLS

@Suite struct CertificateFileTests {
    private func temporaryDirectory() throws -> String {
        var template = Array("/tmp/rapport-tls-test-XXXXXX".utf8CString)
        let path = template.withUnsafeMutableBufferPointer { mkdtemp($0.baseAddress!) }
        return String(cString: try #require(path))
    }

    private func remove(_ directory: String, _ paths: DevCertificates.Paths) {
        for file in [paths.caCertificate, paths.serverCertificateChain, paths.serverPrivateKey] {
            unlink(file)
        }
        rmdir(directory)
    }

    @Test func ensureWritesOnceWithPrivateKeyMode0600() throws {
        let parent = try temporaryDirectory()
        let directory = parent + "/certs"
        let paths = try DevCertificates.ensure(in: directory)
        defer { remove(directory, paths); rmdir(parent) }

        var info = stat()
        #expect(stat(paths.serverPrivateKey, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o600)

        let pin = try SPKIPin.sha256Hex(certificateFile: paths.serverCertificateChain)
        // A second call must reuse, not regenerate, or clients trusting the old CA would break.
        let again = try DevCertificates.ensure(in: directory)
        #expect(again == paths)
        #expect(try SPKIPin.sha256Hex(certificateFile: again.serverCertificateChain) == pin)

        // Contexts load from files just as from memory.
        _ = try TLSContext(configuration: .server(certificateChain: .file(paths.serverCertificateChain), privateKey: .file(paths.serverPrivateKey)))
        _ = try TLSContext(configuration: .client(trustRoots: .certificates(.file(paths.caCertificate)), expectedHostname: "localhost", spkiSHA256Pin: pin))
    }

    @Test func partialSetIsNotOverwritten() throws {
        let directory = try temporaryDirectory()
        let paths = DevCertificates.Paths(directory: directory)
        defer { remove(directory, paths) }
        let fd = open(paths.caCertificate, O_WRONLY | O_CREAT, 0o644)
        close(fd)
        #expect(throws: TLSError.self) { try DevCertificates.ensure(in: directory) }
    }

    @Test func badMaterialReportsOpenSSLErrors() throws {
        let error = try #require(throws: TLSError.self) {
            try TLSContext(configuration: .server(certificateChain: .file("/nonexistent/chain.pem"), privateKey: .file("/nonexistent/key.pem")))
        }
        #expect(error.operation == .configuration)
        #expect(!error.openSSLErrors.isEmpty)

        let bundle = try DevCertificates.generate()
        let other = try DevCertificates.generate()
        let mismatch = try #require(throws: TLSError.self) {
            try TLSContext(configuration: .server(certificateChain: .pem(bundle.serverCertificateChainPEM), privateKey: .pem(other.serverPrivateKeyPEM)))
        }
        #expect(mismatch.description.contains("key values mismatch"))
    }
}
