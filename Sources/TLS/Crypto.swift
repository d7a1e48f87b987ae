import COpenSSL

/// The few primitives Rapport needs besides TLS itself, from the same OpenSSL.
public enum Crypto {
    /// SHA-256 of `bytes`.
    public static func sha256(_ bytes: some Collection<UInt8>) -> [UInt8] {
        let input = Array(bytes)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        // EVP_Digest with SHA-256 cannot fail on valid pointers; a failure would be a broken
        // OpenSSL installation, which must not pass silently.
        precondition(EVP_Digest(input, input.count, &digest, &length, EVP_sha256(), nil) == 1, "SHA-256 failed")
        return Array(digest.prefix(Int(length)))
    }

    /// HMAC-SHA256 of `message` under `key`: what signs a webhook delivery.
    public static func hmacSHA256(key: some Collection<UInt8>, _ message: some Collection<UInt8>) -> [UInt8] {
        let key = Array(key), input = Array(message)
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        // As with SHA-256: fails only on a broken OpenSSL, which must not pass silently.
        precondition(HMAC(EVP_sha256(), key, Int32(key.count), input, input.count, &digest, &length) != nil, "HMAC-SHA256 failed")
        return Array(digest.prefix(Int(length)))
    }

    /// `count` bytes from OpenSSL's CSPRNG.
    public static func randomBytes(_ count: Int) throws -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: count)
        ERR_clear_error()
        guard RAND_bytes(&bytes, Int32(count)) == 1 else {
            throw TLSError.fromQueue(.configuration, "RAND_bytes failed")
        }
        return bytes
    }

    /// Compares in time that depends only on the length, so a secret's prefix cannot be guessed
    /// by timing the comparison.
    public static func constantTimeEquals(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return CRYPTO_memcmp(a, b, a.count) == 0
    }

    /// Lowercase hexadecimal.
    public static func hex(_ bytes: some Sequence<UInt8>) -> String {
        let digits = Array("0123456789abcdef".utf8)
        var out: [UInt8] = []
        for byte in bytes {
            out.append(digits[Int(byte >> 4)])
            out.append(digits[Int(byte & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes from hexadecimal (either case, `:` separators allowed), or `nil` if it is not hex.
    public static func bytes(fromHex text: String) -> [UInt8]? {
        let digits = Array(text.utf8.filter { $0 != UInt8(ascii: ":") })
        guard digits.count % 2 == 0 else { return nil }
        func value(_ c: UInt8) -> UInt8? {
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): c - UInt8(ascii: "A") + 10
            default: nil
            }
        }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = value(digits[index]), let low = value(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }
}
