import COpenSSL
import CRapportOpenSSLShim

/// A configured OpenSSL `SSL_CTX`, shared by every connection of one endpoint.
///
/// `@unchecked Sendable` is sound because the `SSL_CTX` is fully configured in
/// `init` and never mutated afterwards, and OpenSSL 3 documents `SSL_CTX` as safe
/// to use concurrently from several threads for creating `SSL` objects. The
/// ALPN buffer is likewise written once in `init` and only read afterwards.
public final class TLSContext: @unchecked Sendable {
    /// The configuration this context was built from.
    public let configuration: TLSConfiguration

    /// Owned; freed in `deinit`. Connections keep this object alive (not just the
    /// `SSL_CTX` refcount) because the ALPN callback reads `serverALPN`.
    let handle: OpaquePointer
    /// Server ALPN preference list in wire format, owned by this object.
    private let serverALPN: UnsafeMutableRawBufferPointer?
    /// Decoded pin bytes for clients, `nil` when not pinning.
    let spkiPin: [UInt8]?

    /// Builds the `SSL_CTX`; throws a ``TLSError`` with the OpenSSL error queue
    /// when certificates, keys or trust roots cannot be loaded.
    public init(configuration: TLSConfiguration) throws {
        self.configuration = configuration
        ERR_clear_error()
        guard let ctx = SSL_CTX_new(configuration.isServer ? TLS_server_method() : TLS_client_method()) else {
            throw TLSError.fromQueue(.configuration, "SSL_CTX_new failed")
        }
        // Owned from here on: free it on every error path below.
        var ok = false
        var alpnStorage: UnsafeMutableRawBufferPointer?
        defer {
            if !ok {
                SSL_CTX_free(ctx)
                alpnStorage?.deallocate()
            }
        }

        if let override = configuration._unsafeProtocolOverride {
            SSL_CTX_set_security_level(ctx, override.securityLevel)
            _ = rapport_SSL_CTX_set_min_proto_version(ctx, override.min)
            _ = rapport_SSL_CTX_set_max_proto_version(ctx, override.max)
        } else {
            if configuration.minimumVersion == .tls1_3 && configuration.maximumVersion == .tls1_2 {
                throw TLSError(operation: .configuration, message: "maximum TLS version is below the minimum")
            }
            guard rapport_SSL_CTX_set_min_proto_version(ctx, configuration.minimumVersion.openSSLValue) == 1,
                  rapport_SSL_CTX_set_max_proto_version(ctx, configuration.maximumVersion?.openSSLValue ?? 0) == 1
            else {
                throw TLSError.fromQueue(.configuration, "cannot set protocol version bounds")
            }
        }
        // TLS 1.2 suites; TLS 1.3 has its own list (all AEAD) that this does not touch.
        guard SSL_CTX_set_cipher_list(ctx, configuration._unsafeCipherList ?? Self.tls12CipherSuites) == 1 else {
            throw TLSError.fromQueue(.configuration, "cannot set the TLS 1.2 cipher suites")
        }
        // Renegotiation only adds attack surface (and would let SSL_write ask
        // for reads); releasing buffers keeps idle connections from pinning ~32 KiB.
        rapport_SSL_CTX_disable_renegotiation(ctx)
        _ = rapport_SSL_CTX_set_mode(ctx, Int(SSL_MODE_RELEASE_BUFFERS))

        let wire = try Self.alpnWireFormat(configuration.applicationProtocols)
        var pin: [UInt8]? = nil
        switch configuration.role {
        case let .server(chain, key):
            try Self.loadServerIdentity(ctx, chain: chain, key: key)
            // Clients of this server never resume sessions, so tickets are wasted bytes.
            SSL_CTX_set_num_tickets(ctx, 0)
            if !wire.isEmpty {
                let storage = UnsafeMutableRawBufferPointer.allocate(byteCount: wire.count, alignment: 1)
                storage.copyBytes(from: wire)
                alpnStorage = storage
            }
        case let .client(roots, _, pinHex):
            try Self.loadTrustRoots(ctx, roots)
            SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nil)
            if !wire.isEmpty {
                // Unusually, this returns 0 on success.
                guard wire.withUnsafeBufferPointer({ SSL_CTX_set_alpn_protos(ctx, $0.baseAddress, UInt32($0.count)) }) == 0 else {
                    throw TLSError.fromQueue(.configuration, "cannot set ALPN protocols")
                }
            }
            if let pinHex {
                pin = try SPKIPin.decodeHex(pinHex)
            }
        }
        self.handle = ctx
        self.serverALPN = alpnStorage
        self.spkiPin = pin
        ok = true
        if alpnStorage != nil {
            // Unretained is safe: every SSL created from this context is owned
            // by an object that also retains this TLSContext.
            SSL_CTX_set_alpn_select_cb(ctx, alpnSelectCallback, Unmanaged.passUnretained(self).toOpaque())
        }
    }

    /// The TLS 1.2 suites offered and accepted: forward-secret key exchange (ECDHE) with an AEAD
    /// cipher only. CBC suites are left out for their history of padding-oracle and Lucky13
    /// attacks; ECDSA first because the dev certificates are P-256, RSA for operators' keys.
    static let tls12CipherSuites = [
        "ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-ECDSA-CHACHA20-POLY1305",
        "ECDHE-RSA-AES128-GCM-SHA256", "ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-CHACHA20-POLY1305",
    ].joined(separator: ":")

    deinit {
        SSL_CTX_free(handle)
        serverALPN?.deallocate()
    }

    /// The server's ALPN list, for the selection callback.
    var serverALPNBytes: UnsafeRawBufferPointer? {
        serverALPN.map { UnsafeRawBufferPointer($0) }
    }

    private static func alpnWireFormat(_ protocols: [String]) throws -> [UInt8] {
        var wire: [UInt8] = []
        for name in protocols {
            let bytes = Array(name.utf8)
            guard (1...255).contains(bytes.count) else {
                throw TLSError(operation: .configuration, message: "ALPN protocol name must be 1...255 bytes: \(name)")
            }
            wire.append(UInt8(bytes.count))
            wire.append(contentsOf: bytes)
        }
        return wire
    }

    private static func loadServerIdentity(_ ctx: OpaquePointer, chain: PEMSource, key: PEMSource) throws {
        switch chain {
        case let .file(path):
            guard SSL_CTX_use_certificate_chain_file(ctx, path) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot load certificate chain from \(path)")
            }
        case let .pem(text):
            let certificates = try readPEMCertificates(text)
            guard let leaf = certificates.first else {
                throw TLSError(operation: .configuration, message: "certificate chain PEM contains no certificate")
            }
            guard SSL_CTX_use_certificate(ctx, leaf.pointer) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot use server certificate")
            }
            for intermediate in certificates.dropFirst() {
                guard rapport_SSL_CTX_add1_chain_cert(ctx, intermediate.pointer) == 1 else {
                    throw TLSError.fromQueue(.configuration, "cannot add intermediate certificate")
                }
            }
        }
        switch key {
        case let .file(path):
            guard SSL_CTX_use_PrivateKey_file(ctx, path, SSL_FILETYPE_PEM) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot load private key from \(path)")
            }
        case let .pem(text):
            let key = try withMemoryBIO(text) { bio in PEM_read_bio_PrivateKey(bio, nil, nil, nil).map(PrivateKeyHandle.init(taking:)) }
            guard let key else {
                throw TLSError.fromQueue(.configuration, "cannot parse private key PEM")
            }
            guard SSL_CTX_use_PrivateKey(ctx, key.pointer) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot use private key")
            }
        }
        guard SSL_CTX_check_private_key(ctx) == 1 else {
            throw TLSError.fromQueue(.configuration, "private key does not match the server certificate")
        }
    }

    private static func loadTrustRoots(_ ctx: OpaquePointer, _ roots: TrustRoots) throws {
        switch roots {
        case .system:
            guard SSL_CTX_set_default_verify_paths(ctx) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot load the system trust store")
            }
        case let .certificates(.file(path)):
            guard SSL_CTX_load_verify_locations(ctx, path, nil) == 1 else {
                throw TLSError.fromQueue(.configuration, "cannot load CA certificates from \(path)")
            }
        case let .certificates(.pem(text)):
            let certificates = try readPEMCertificates(text)
            guard !certificates.isEmpty else {
                throw TLSError(operation: .configuration, message: "CA PEM contains no certificate")
            }
            let store = SSL_CTX_get_cert_store(ctx)
            for certificate in certificates {
                // X509_STORE_add_cert takes its own reference.
                guard X509_STORE_add_cert(store, certificate.pointer) == 1 else {
                    throw TLSError.fromQueue(.configuration, "cannot add CA certificate to the trust store")
                }
            }
        }
    }
}

/// Server-side ALPN selection in server preference order. Declining with a
/// fatal alert (rather than NOACK) when the client offered protocols but none
/// overlap is what RFC 7301 §3.2 asks for: no_application_protocol.
private let alpnSelectCallback: SSL_CTX_alpn_select_cb_func = { _, out, outLength, clientList, clientLength, arg in
    guard let arg, let out, let outLength, let clientList,
          let server = Unmanaged<TLSContext>.fromOpaque(arg).takeUnretainedValue().serverALPNBytes
    else { return SSL_TLSEXT_ERR_ALERT_FATAL }
    let client = UnsafeRawBufferPointer(start: clientList, count: Int(clientLength))
    var s = 0
    while s < server.count {
        let serverName = server[(s + 1)..<(s + 1 + Int(server[s]))]
        var c = 0
        while c < client.count {
            let end = c + 1 + Int(client[c])
            guard end <= client.count else { break }
            if client[(c + 1)..<end].elementsEqual(serverName) {
                // Point into our own storage, which outlives the handshake.
                out.pointee = server.baseAddress!.advanced(by: s + 1).assumingMemoryBound(to: UInt8.self)
                outLength.pointee = UInt8(serverName.count)
                return SSL_TLSEXT_ERR_OK
            }
            c = end
        }
        s += 1 + Int(server[s])
    }
    return SSL_TLSEXT_ERR_ALERT_FATAL
}
