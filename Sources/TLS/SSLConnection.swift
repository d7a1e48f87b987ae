import COpenSSL
import CRapportOpenSSLShim
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Sole owner of one `SSL*`. The two memory BIOs are owned by the `SSL`
/// (`SSL_set_bio` transfers them), so they are freed with it and are only
/// borrowed here.
final class SSLConnection {
    let ssl: OpaquePointer
    /// Ciphertext from the network, read by OpenSSL.
    private(set) var networkInput: OpaquePointer
    /// Ciphertext produced by OpenSSL, to be sent to the network.
    private(set) var networkOutput: OpaquePointer
    /// Retained because the `SSL` uses the context's callbacks and their storage.
    let context: TLSContext

    init(context: TLSContext) throws {
        ERR_clear_error()
        guard let ssl = SSL_new(context.handle) else {
            throw TLSError.fromQueue(.configuration, "SSL_new failed")
        }
        var ok = false
        defer { if !ok { SSL_free(ssl) } }
        guard let input = BIO_new(BIO_s_mem()) else {
            throw TLSError.fromQueue(.configuration, "BIO_new failed")
        }
        guard let output = BIO_new(BIO_s_mem()) else {
            BIO_free(input)
            throw TLSError.fromQueue(.configuration, "BIO_new failed")
        }
        SSL_set_bio(ssl, input, output)

        switch context.configuration.role {
        case .server:
            SSL_set_accept_state(ssl)
        case let .client(_, hostname, _):
            SSL_set_connect_state(ssl)
            try Self.configurePeerName(ssl, hostname)
        }
        self.ssl = ssl
        self.networkInput = input
        self.networkOutput = output
        self.context = context
        ok = true
    }

    deinit {
        SSL_free(ssl)
    }

    /// A memory BIO keeps the largest buffer it ever held: the ciphertext of a whole frame
    /// written at once (a pull batch, up to megabytes), or a large read. A connection that then
    /// goes quiet (a live session, idle all day) would hold it for good, beside the record
    /// buffers that `SSL_MODE_RELEASE_BUFFERS` frees. So an empty BIO whose buffer grew past
    /// `threshold` is replaced with a fresh one (the `SSL` frees the old). Cheap when nothing
    /// is to be done: two controls on the BIOs.
    func releaseLargeBuffers(threshold: Int = 16 << 10) {
        if let fresh = Self.replacement(for: networkOutput, threshold: threshold) {
            SSL_set0_wbio(ssl, fresh)
            networkOutput = fresh
        }
        if let fresh = Self.replacement(for: networkInput, threshold: threshold) {
            SSL_set0_rbio(ssl, fresh)
            networkInput = fresh
        }
    }

    private static func replacement(for bio: OpaquePointer, threshold: Int) -> OpaquePointer? {
        guard BIO_ctrl_pending(bio) == 0 else { return nil }
        var memory: UnsafeMutablePointer<BUF_MEM>?
        guard BIO_ctrl(bio, BIO_C_GET_BUF_MEM_PTR, 0, &memory) == 1, let memory, memory.pointee.max > threshold else { return nil }
        return BIO_new(BIO_s_mem())
    }

    /// The bytes the two BIOs' buffers hold room for (for tests).
    var bufferedCapacity: Int {
        [networkInput, networkOutput].reduce(0) { total, bio in
            var memory: UnsafeMutablePointer<BUF_MEM>?
            guard BIO_ctrl(bio, BIO_C_GET_BUF_MEM_PTR, 0, &memory) == 1, let memory else { return total }
            return total + memory.pointee.max
        }
    }

    /// Makes certificate verification check `hostname`. IP literals are matched
    /// against IP SANs and are not sent as SNI (RFC 6066 §3 forbids it).
    private static func configurePeerName(_ ssl: OpaquePointer, _ hostname: String) throws {
        // OpenSSL treats an empty name as "clear the check", which would
        // silently turn verification into "any certificate from a trusted CA".
        guard !hostname.isEmpty else {
            throw TLSError(operation: .configuration, message: "expected host name must not be empty")
        }
        if isIPAddress(hostname) {
            guard X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), hostname) == 1 else {
                throw TLSError.fromQueue(.configuration, "invalid IP address \(hostname)")
            }
            return
        }
        SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
        guard SSL_set1_host(ssl, hostname) == 1,
              rapport_SSL_set_tlsext_host_name(ssl, hostname) == 1
        else {
            throw TLSError.fromQueue(.configuration, "invalid host name \(hostname)")
        }
    }

    private static func isIPAddress(_ text: String) -> Bool {
        var storage = in6_addr()
        return inet_pton(AF_INET, text, &storage) == 1 || inet_pton(AF_INET6, text, &storage) == 1
    }
}
