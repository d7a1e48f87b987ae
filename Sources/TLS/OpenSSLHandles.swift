import COpenSSL
import CRapportOpenSSLShim

// Single owners for transient OpenSSL handles, so that every early `throw`
// releases them without hand-written cleanup on each path.

/// Owns one `X509*`.
final class X509Handle {
    let pointer: OpaquePointer
    init(taking pointer: OpaquePointer) { self.pointer = pointer }
    deinit { X509_free(pointer) }
}

/// Owns one `EVP_PKEY*`.
final class PrivateKeyHandle {
    let pointer: OpaquePointer
    init(taking pointer: OpaquePointer) { self.pointer = pointer }
    deinit { EVP_PKEY_free(pointer) }
}

/// Owns one `BIO*` (memory or file).
final class BIOHandle {
    let pointer: OpaquePointer
    init(taking pointer: OpaquePointer) { self.pointer = pointer }
    deinit { BIO_free(pointer) }

    /// A fresh, growable memory BIO.
    static func memory() throws -> BIOHandle {
        guard let bio = BIO_new(BIO_s_mem()) else {
            throw TLSError.fromQueue(.configuration, "BIO_new failed")
        }
        return BIOHandle(taking: bio)
    }

    /// The readable contents of a memory BIO as text.
    func memoryContents() -> String {
        var data: UnsafeMutablePointer<CChar>? = nil
        let length = rapport_BIO_get_mem_data(pointer, &data)
        guard let data, length > 0 else { return "" }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }
}

/// Runs `body` with a read-only memory BIO over `text`; the BIO borrows the
/// bytes, so it must not escape the closure.
func withMemoryBIO<T>(_ text: String, _ body: (OpaquePointer) throws -> T) throws -> T {
    let bytes = Array(text.utf8)
    return try bytes.withUnsafeBytes { raw in
        guard let bio = BIO_new_mem_buf(raw.baseAddress, Int32(raw.count)) else {
            throw TLSError.fromQueue(.configuration, "BIO_new_mem_buf failed")
        }
        defer { BIO_free(bio) }
        return try body(bio)
    }
}

/// Reads every certificate from PEM data held in `bio`.
private func readCertificates(from bio: OpaquePointer) throws -> [X509Handle] {
    ERR_clear_error()
    var certificates: [X509Handle] = []
    while let certificate = PEM_read_bio_X509(bio, nil, nil, nil) {
        certificates.append(X509Handle(taking: certificate))
    }
    // Running out of PEM blocks is reported as "no start line"; anything else
    // means a block was present but malformed.
    let last = ERR_peek_last_error()
    if last != 0 && ERR_GET_REASON(last) != PEM_R_NO_START_LINE {
        throw TLSError.fromQueue(.certificateParsing, "malformed PEM certificate")
    }
    ERR_clear_error()
    return certificates
}

/// Parses all certificates in PEM text, in order.
func readPEMCertificates(_ text: String) throws -> [X509Handle] {
    try withMemoryBIO(text) { try readCertificates(from: $0) }
}

/// Parses all certificates in a PEM file, in order.
func readPEMCertificates(file path: String) throws -> [X509Handle] {
    ERR_clear_error()
    guard let bio = BIO_new_file(path, "r") else {
        throw TLSError.fromQueue(.certificateParsing, "cannot open \(path)")
    }
    let handle = BIOHandle(taking: bio)
    return try readCertificates(from: handle.pointer)
}
