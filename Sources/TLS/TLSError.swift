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
