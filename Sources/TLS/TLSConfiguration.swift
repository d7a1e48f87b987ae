import COpenSSL

/// Where PEM material comes from.
public enum PEMSource: Sendable, Equatable {
    /// A path to a PEM file.
    case file(String)
    /// PEM text held in memory (e.g. freshly generated, or read from a secret store).
    case pem(String)
}

/// Which certificate authorities a client trusts.
public enum TrustRoots: Sendable, Equatable {
    /// The operating system's default store (`SSL_CTX_set_default_verify_paths`).
    case system
    /// One or more PEM CA certificates.
    case certificates(PEMSource)
}

/// A TLS protocol version that can be negotiated.
public enum TLSVersion: Sendable, Equatable {
    /// TLS 1.2 (RFC 5246), the floor.
    case tls1_2
    /// TLS 1.3 (RFC 8446), preferred whenever both sides support it.
    case tls1_3

    var openSSLValue: Int32 {
        switch self {
        case .tls1_2: return TLS1_2_VERSION
        case .tls1_3: return TLS1_3_VERSION
        }
    }
}

/// Immutable description of a TLS endpoint; turn it into a ``TLSContext`` to use it.
///
/// TLS 1.2 is the floor on purpose: older versions are deprecated (RFC 8996) and
/// there is no legacy client population for this server to accommodate.
public struct TLSConfiguration: Sendable {
    /// Server or client, with the role-specific material.
    public enum Role: Sendable, Equatable {
        /// Presents `certificateChain` and proves possession of `privateKey`.
        case server(certificateChain: PEMSource, privateKey: PEMSource)
        /// Verifies the server; see ``TLSConfiguration/client(trustRoots:expectedHostname:spkiSHA256Pin:applicationProtocols:)``.
        case client(trustRoots: TrustRoots, expectedHostname: String, spkiSHA256Pin: String?)
    }

    /// The endpoint's role and identity/trust material.
    public var role: Role
    /// ALPN protocol names, most preferred first. Empty disables ALPN.
    public var applicationProtocols: [String]
    /// Lowest version accepted; never below TLS 1.2.
    public var minimumVersion: TLSVersion
    /// Highest version accepted; `nil` means whatever OpenSSL supports (TLS 1.3 today).
    public var maximumVersion: TLSVersion?

    /// Test-only escape hatches to prove the TLS 1.2 floor is enforced by a peer.
    /// Internal so that production code cannot weaken the protocol floor.
    var _unsafeProtocolOverride: (min: Int32, max: Int32, securityLevel: Int32)?
    /// Test-only: an OpenSSL TLS 1.2 cipher list instead of the AEAD-only default, to prove a
    /// peer refuses the suites left out.
    var _unsafeCipherList: String?

    /// A server presenting `certificateChain` (leaf first, then intermediates).
    public static func server(
        certificateChain: PEMSource,
        privateKey: PEMSource,
        applicationProtocols: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server(certificateChain: certificateChain, privateKey: privateKey),
            applicationProtocols: applicationProtocols,
            minimumVersion: .tls1_2,
            maximumVersion: nil
        )
    }

    /// A client that verifies the server chain against `trustRoots` and the name
    /// `expectedHostname` (a DNS name or an IP literal).
    ///
    /// - Parameter spkiSHA256Pin: optional hex SHA-256 of the server's
    ///   SubjectPublicKeyInfo (see ``SPKIPin``). It is checked *in addition to*
    ///   chain and name verification, so a pin can only narrow trust.
    public static func client(
        trustRoots: TrustRoots = .system,
        expectedHostname: String,
        spkiSHA256Pin: String? = nil,
        applicationProtocols: [String] = []
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client(trustRoots: trustRoots, expectedHostname: expectedHostname, spkiSHA256Pin: spkiSHA256Pin),
            applicationProtocols: applicationProtocols,
            minimumVersion: .tls1_2,
            maximumVersion: nil
        )
    }

    var isServer: Bool {
        if case .server = role { return true }
        return false
    }
}
