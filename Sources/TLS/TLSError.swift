import COpenSSL

/// A TLS failure, carrying everything OpenSSL told us about it.
///
/// OpenSSL reports failures through a thread-local error queue; the queue is
/// drained into `openSSLErrors` at the point of failure so that the error value
/// stays meaningful after it has crossed threads or tasks.
public struct TLSError: Error, Sendable, CustomStringConvertible {
    /// The operation that failed.
    public enum Operation: String, Sendable {
        case configuration
        case handshake
        case pinVerification
        case read
        case write
        case certificateGeneration
        case certificateParsing
    }

    /// What we were doing when it failed.
    public var operation: Operation
    /// A human-readable summary written by this library.
    public var message: String
    /// The drained OpenSSL error queue, oldest first (`ERR_error_string_n` format).
    public var openSSLErrors: [String]
    /// The certificate verification result (`X509_verify_cert_error_string`),
    /// present only when peer verification failed.
    public var verifyResult: String?

    /// Creates an error; library code uses this for failures that did not come from OpenSSL.
    public init(operation: Operation, message: String, openSSLErrors: [String] = [], verifyResult: String? = nil) {
        self.operation = operation
        self.message = message
        self.openSSLErrors = openSSLErrors
        self.verifyResult = verifyResult
    }

    public var description: String {
        var text = "TLSError(\(operation.rawValue)): \(message)"
        if let verifyResult {
            text += "; certificate verification failed: \(verifyResult)"
        }
        if !openSSLErrors.isEmpty {
            text += "; OpenSSL: " + openSSLErrors.joined(separator: " | ")
        }
        return text
    }

    /// Builds an error and drains the calling thread's OpenSSL error queue into it.
    static func fromQueue(_ operation: Operation, _ message: String, verifyResult: String? = nil) -> TLSError {
        TLSError(operation: operation, message: message, openSSLErrors: drainOpenSSLErrorQueue(), verifyResult: verifyResult)
    }
}

/// Pops every pending error off the thread-local OpenSSL queue.
func drainOpenSSLErrorQueue() -> [String] {
    var errors: [String] = []
    while true {
        let code = ERR_get_error()
        if code == 0 { break }
        var buffer = [CChar](repeating: 0, count: 256)
        ERR_error_string_n(code, &buffer, buffer.count)
        errors.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
    }
    return errors
}

extension TLSError {
    /// Why a handshake failed, in a few kinds an operator can act on: a bounded set, fit for a
    /// metric label, unlike `message` and the OpenSSL queue.
    public enum FailureReason: String, Sendable, CaseIterable {
        /// The peer closed the connection before the handshake finished.
        case peerClosed = "peer_closed"
        /// The bytes were not TLS (plain HTTP, a port scanner, garbage).
        case notTLS = "not_tls"
        /// No TLS version both sides speak (an old client).
        case protocolVersion = "protocol_version"
        /// No cipher suite, group or signature algorithm in common (a CBC-only TLS 1.2 client).
        case noSharedCipher = "no_shared_cipher"
        /// No application protocol (ALPN) in common: not a Rapport client.
        case applicationProtocol = "alpn"
        /// A certificate was refused: the peer did not trust ours, or ours did not trust or
        /// pin the peer's.
        case certificate
        /// Anything else OpenSSL refused.
        case other
    }

    /// The kind of a failed handshake; `nil` when the error is not a handshake's.
    public var handshakeFailureReason: FailureReason? {
        switch operation {
        case .pinVerification:
            return .certificate
        case .handshake:
            break
        default:
            return nil
        }
        if verifyResult != nil { return .certificate }
        let text = (openSSLErrors.joined(separator: " ") + " " + message).lowercased()
        let kinds: [(FailureReason, [String])] = [
            (.peerClosed, ["closed by peer"]),
            (.applicationProtocol, ["application protocol"]),
            (.protocolVersion, ["unsupported protocol", "protocol version", "no protocols available", "version too low"]),
            (.noSharedCipher, ["no shared cipher", "no cipher", "no suitable signature", "no shared group", "handshake failure"]),
            (.certificate, ["certificate", "unknown ca", "bad certificate"]),
            (.notTLS, ["wrong version number", "http request", "packet length too long", "unknown protocol", "record layer failure",
                       "unexpected message", "record length mismatch"]),
        ]
        return kinds.first { _, needles in needles.contains { text.contains($0) } }?.0 ?? .other
    }
}
