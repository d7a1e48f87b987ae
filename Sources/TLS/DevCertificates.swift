import COpenSSL
import CRapportOpenSSLShim
import PrivateFiles
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Development-only PKI: a throwaway CA and a server certificate it signed, so
/// the server can speak TLS out of the box without anyone running `openssl`.
///
/// The CA private key is discarded after signing: nothing can be issued from
/// this CA later, so leaking `ca.pem` (which clients need) grants nothing.
public enum DevCertificates {
    /// PEM output of ``generate(commonName:dnsNames:ipAddresses:validityDays:)``.
    public struct Bundle: Sendable {
        /// The development CA certificate; give this to clients as their trust root.
        public var caCertificatePEM: String
        /// Server leaf certificate followed by the CA certificate.
        public var serverCertificateChainPEM: String
        /// Server private key (PKCS#8 PEM, unencrypted).
        public var serverPrivateKeyPEM: String
    }

    /// File locations written by ``ensure(in:)``.
    public struct Paths: Sendable, Equatable {
        /// CA certificate PEM (`ca.pem`): the trust root to hand to clients.
        public var caCertificate: String
        /// Server certificate chain PEM (`server-chain.pem`), leaf first.
        public var serverCertificateChain: String
        /// Server private key PEM (`server-key.pem`), mode 0600.
        public var serverPrivateKey: String

        /// The conventional file names inside `directory`.
        public init(directory: String) {
            caCertificate = directory + "/ca.pem"
            serverCertificateChain = directory + "/server-chain.pem"
            serverPrivateKey = directory + "/server-key.pem"
        }
    }

    /// Generates a fresh P-256 development CA and a server certificate signed by it.
    public static func generate(
        commonName: String = "localhost",
        dnsNames: [String] = ["localhost"],
        ipAddresses: [String] = ["127.0.0.1", "::1"],
        validityDays: Int = 825
    ) throws -> Bundle {
        let caKey = try generateKey()
        let ca = try makeCertificate(commonName: "Rapport Development CA", subjectKey: caKey)
        try setIssuer(of: ca, to: ca)
        try addExtensions(to: ca, issuer: ca, [
            (NID_basic_constraints, "critical,CA:TRUE,pathlen:0"),
            (NID_key_usage, "critical,keyCertSign,cRLSign"),
            (NID_subject_key_identifier, "hash"),
        ], validityDays: validityDays)
        try sign(ca, with: caKey)

        let serverKey = try generateKey()
        let server = try makeCertificate(commonName: commonName, subjectKey: serverKey)
        try setIssuer(of: server, to: ca)
        let altNames = (dnsNames.map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }).joined(separator: ",")
        var extensions: [(Int32, String)] = [
            (NID_basic_constraints, "critical,CA:FALSE"),
            (NID_key_usage, "critical,digitalSignature"),
            (NID_ext_key_usage, "serverAuth"),
            (NID_subject_key_identifier, "hash"),
            (NID_authority_key_identifier, "keyid:always"),
        ]
        if !altNames.isEmpty {
            extensions.append((NID_subject_alt_name, altNames))
        }
        try addExtensions(to: server, issuer: ca, extensions, validityDays: validityDays)
        try sign(server, with: caKey)

        let caPEM = try pem(certificate: ca)
        return Bundle(
            caCertificatePEM: caPEM,
            serverCertificateChainPEM: try pem(certificate: server) + caPEM,
            serverPrivateKeyPEM: try pem(privateKey: serverKey)
        )
    }

    /// Returns the dev certificate files in `directory`, generating them first
    /// if none exist. The folder is created 0700 and every file 0600.
    ///
    /// Throws rather than regenerating when only some files exist: a partial
    /// set means someone put files there, and silently replacing them would
    /// break clients that trust the existing CA.
    public static func ensure(in directory: String) throws -> Paths {
        let paths = Paths(directory: directory)
        let files = [paths.caCertificate, paths.serverCertificateChain, paths.serverPrivateKey]
        let present = files.filter { access($0, F_OK) == 0 }
        if present.count == files.count { return paths }
        guard present.isEmpty else {
            throw TLSError(operation: .certificateGeneration,
                           message: "incomplete development certificate set in \(directory) (found \(present)); remove it to regenerate")
        }
        let bundle = try generate()
        do {
            try PrivateFiles.createDirectory(directory)
            // Key last: its presence is what makes the set look complete to the next run.
            try PrivateFiles.write(bundle.caCertificatePEM, to: paths.caCertificate)
            try PrivateFiles.write(bundle.serverCertificateChainPEM, to: paths.serverCertificateChain)
            try PrivateFiles.write(bundle.serverPrivateKeyPEM, to: paths.serverPrivateKey)
        } catch {
            throw TLSError(operation: .certificateGeneration, message: error.description)
        }
        return paths
    }

    // MARK: - OpenSSL plumbing

    private static func generateKey() throws -> PrivateKeyHandle {
        ERR_clear_error()
        guard let key = rapport_EVP_EC_gen_P256() else {
            throw TLSError.fromQueue(.certificateGeneration, "P-256 key generation failed")
        }
        return PrivateKeyHandle(taking: key)
    }

    private static func makeCertificate(commonName: String, subjectKey: PrivateKeyHandle) throws -> X509Handle {
        ERR_clear_error()
        guard let raw = X509_new() else {
            throw TLSError.fromQueue(.certificateGeneration, "X509_new failed")
        }
        let certificate = X509Handle(taking: raw)
        // 159 random bits: positive, under the 20-octet limit, and unique enough
        // that regenerated dev certificates never collide in a client's cache.
        var serialBytes = [UInt8](repeating: 0, count: 20)
        guard RAND_bytes(&serialBytes, Int32(serialBytes.count)) == 1 else {
            throw TLSError.fromQueue(.certificateGeneration, "RAND_bytes failed")
        }
        serialBytes[0] &= 0x7f
        guard let serial = BN_bin2bn(serialBytes, Int32(serialBytes.count), nil) else {
            throw TLSError.fromQueue(.certificateGeneration, "BN_bin2bn failed")
        }
        defer { BN_free(serial) }
        guard X509_set_version(raw, 2) == 1, // v3, needed for extensions
              BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(raw)) != nil,
              X509_set_pubkey(raw, subjectKey.pointer) == 1,
              let name = X509_get_subject_name(raw),
              X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, commonName, -1, -1, 0) == 1
        else {
            throw TLSError.fromQueue(.certificateGeneration, "cannot populate certificate")
        }
        return certificate
    }

    private static func setIssuer(of certificate: X509Handle, to issuer: X509Handle) throws {
        guard X509_set_issuer_name(certificate.pointer, X509_get_subject_name(issuer.pointer)) == 1 else {
            throw TLSError.fromQueue(.certificateGeneration, "cannot set issuer name")
        }
    }

    private static func addExtensions(
        to certificate: X509Handle, issuer: X509Handle, _ extensions: [(Int32, String)], validityDays: Int
    ) throws {
        // Backdate an hour so small clock skew between machines does not make a
        // brand-new certificate "not yet valid".
        guard X509_gmtime_adj(X509_getm_notBefore(certificate.pointer), -3600) != nil,
              X509_time_adj_ex(X509_getm_notAfter(certificate.pointer), Int32(validityDays), 0, nil) != nil
        else {
            throw TLSError.fromQueue(.certificateGeneration, "cannot set validity period")
        }
        for (nid, value) in extensions {
            guard rapport_X509_add_ext_conf(certificate.pointer, issuer.pointer, nid, value) == 1 else {
                throw TLSError.fromQueue(.certificateGeneration, "cannot add extension \(value)")
            }
        }
    }

    private static func sign(_ certificate: X509Handle, with key: PrivateKeyHandle) throws {
        guard X509_sign(certificate.pointer, key.pointer, EVP_sha256()) > 0 else {
            throw TLSError.fromQueue(.certificateGeneration, "X509_sign failed")
        }
    }

    private static func pem(certificate: X509Handle) throws -> String {
        let bio = try BIOHandle.memory()
        guard PEM_write_bio_X509(bio.pointer, certificate.pointer) == 1 else {
            throw TLSError.fromQueue(.certificateGeneration, "cannot encode certificate")
        }
        return bio.memoryContents()
    }

    private static func pem(privateKey: PrivateKeyHandle) throws -> String {
        let bio = try BIOHandle.memory()
        guard PEM_write_bio_PrivateKey(bio.pointer, privateKey.pointer, nil, nil, 0, nil, nil) == 1 else {
            throw TLSError.fromQueue(.certificateGeneration, "cannot encode private key")
        }
        return bio.memoryContents()
    }
}
