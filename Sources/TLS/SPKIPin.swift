import COpenSSL

/// SHA-256 pins over a certificate's SubjectPublicKeyInfo (the DER that
/// `i2d_PUBKEY` produces), the same quantity HPKP and most pinning schemes use.
/// Pinning the key rather than the certificate lets a server renew its
/// certificate without breaking pinned clients, as long as it keeps the key.
public enum SPKIPin {
    /// Lowercase hex pin of the first certificate in `certificatePEM`.
    public static func sha256Hex(certificatePEM: String) throws -> String {
        guard let leaf = try readPEMCertificates(certificatePEM).first else {
            throw TLSError(operation: .certificateParsing, message: "PEM contains no certificate")
        }
        return hex(try sha256(of: leaf.pointer))
    }

    /// Lowercase hex pin of the first certificate in the PEM file at `path`.
    public static func sha256Hex(certificateFile path: String) throws -> String {
        guard let leaf = try readPEMCertificates(file: path).first else {
            throw TLSError(operation: .certificateParsing, message: "\(path) contains no certificate")
        }
        return hex(try sha256(of: leaf.pointer))
    }

    /// SHA-256 of the certificate's SubjectPublicKeyInfo DER.
    static func sha256(of certificate: OpaquePointer) throws -> [UInt8] {
        ERR_clear_error()
        guard let key = X509_get0_pubkey(certificate) else {
            throw TLSError.fromQueue(.pinVerification, "certificate has no usable public key")
        }
        let length = i2d_PUBKEY(key, nil)
        guard length > 0 else {
            throw TLSError.fromQueue(.pinVerification, "cannot encode SubjectPublicKeyInfo")
        }
        var der = [UInt8](repeating: 0, count: Int(length))
        let written = der.withUnsafeMutableBufferPointer { buffer -> Int32 in
            var cursor = buffer.baseAddress
            return i2d_PUBKEY(key, &cursor)
        }
        guard written == length else {
            throw TLSError.fromQueue(.pinVerification, "cannot encode SubjectPublicKeyInfo")
        }
        return Crypto.sha256(der)
    }

    static func hex(_ bytes: [UInt8]) -> String { Crypto.hex(bytes) }

    /// Accepts upper/lower case and `:` separators, as admins paste them from
    /// various tools; must decode to exactly 32 bytes.
    static func decodeHex(_ text: String) throws -> [UInt8] {
        guard let bytes = Crypto.bytes(fromHex: text) else {
            throw TLSError(operation: .configuration, message: "SPKI pin contains a non-hex character")
        }
        guard bytes.count == 32 else {
            throw TLSError(operation: .configuration, message: "SPKI pin must be 64 hex digits (SHA-256)")
        }
        return bytes
    }
}
