import Foundation

/// A client of rapportd's integration API for tests and benchmarks: `curl`, a real HTTPS
/// client in a process of its own, checking the server's certificate against the data
/// directory's CA, as an ERP's integration would.
public struct APIClient: Sendable {
    /// What one request got back.
    public struct Reply: Sendable, CustomStringConvertible {
        public var status: Int
        /// Header names lowercased; the last value of a repeated header.
        public var headers: [String: String]
        public var body: String

        /// The body as a JSON object, `[:]` when it is not one.
        public var json: [String: Any] {
            (try? JSONSerialization.jsonObject(with: Data(body.utf8))) as? [String: Any] ?? [:]
        }

        public var description: String { "\(status) \(body.prefix(600))" }
    }

    public let host: String
    public let port: Int
    public let caFile: String
    /// The API key sent as `Authorization: Bearer`; `nil` sends none.
    public var key: String?

    public init(host: String = "127.0.0.1", port: Int, caFile: String, key: String?) {
        self.host = host
        self.port = port
        self.caFile = caFile
        self.key = key
    }

    /// The same client with another key.
    public func with(key: String?) -> APIClient {
        var copy = self
        copy.key = key
        return copy
    }

    /// Sends one request; `body` goes as JSON.
    public func request(_ method: String, _ path: String, body: String? = nil, headers: [String: String] = [:],
                        timeout: Int = 90) throws -> Reply {
        let scratch = NSTemporaryDirectory() + "rapport-api-\(UUID().uuidString)"
        defer {
            try? FileManager.default.removeItem(atPath: scratch + ".headers")
            try? FileManager.default.removeItem(atPath: scratch + ".body")
            try? FileManager.default.removeItem(atPath: scratch + ".in")
        }
        var arguments = ["-sS", "--max-time", String(timeout), "--cacert", caFile, "-X", method,
                         "-D", scratch + ".headers", "-o", scratch + ".body", "-w", "%{http_code}"]
        var sent = headers
        if let key { sent["Authorization"] = "Bearer \(key)" }
        if let body {
            FileManager.default.createFile(atPath: scratch + ".in", contents: Data(body.utf8))
            sent["Content-Type"] = sent["Content-Type"] ?? "application/json"
            arguments += ["--data-binary", "@" + scratch + ".in"]
        }
        for (name, value) in sent.sorted(by: { $0.key < $1.key }) { arguments += ["-H", "\(name): \(value)"] }
        arguments.append("https://\(host):\(port)\(path)")
        let result = try ToolProcess.run("/usr/bin/curl", arguments)
        guard result.status == 0, let status = Int(result.output.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw BenchError("curl \(method) \(path) failed (\(result.status)): \(result.error)")
        }
        var replyHeaders: [String: String] = [:]
        let headerText = (try? String(contentsOfFile: scratch + ".headers", encoding: .utf8)) ?? ""
        for line in headerText.split(whereSeparator: \.isNewline) {
            guard let colon = line.firstIndex(of: ":") else { continue }
            replyHeaders[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        let replyBody = (try? String(contentsOfFile: scratch + ".body", encoding: .utf8)) ?? ""
        return Reply(status: status, headers: replyHeaders, body: replyBody)
    }

    /// Sends `body` (a JSON-able dictionary).
    public func request(_ method: String, _ path: String, json: [String: Any], headers: [String: String] = [:]) throws -> Reply {
        let data = try JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])
        return try request(method, path, body: String(decoding: data, as: UTF8.self), headers: headers)
    }
}
