import ServiceLifecycle

/// The server as a service of a `ServiceGroup` (swift-service-lifecycle): it listens and
/// serves (with its access watch and scheduled work) until the group shuts down gracefully,
/// then stops as `shutdown()` does. Started already (to learn the port), it goes on serving.
extension SyncServer: Service {
    public func run() async throws {
        if port == nil { try await start() }
        // Cancelled rather than shut down gracefully: stop all the same.
        try? await gracefulShutdown()
        await shutdown()
    }

    /// On a branch, the link to the centre as a service of its own, to run in the same group
    /// after the server: a group shuts its services down in reverse order, so the link stops
    /// first, after the batch in hand, while devices are still being served. `nil` before
    /// `start()` and on a server without `upstream`.
    public var upstreamService: (any Service)? {
        branch.withLock { $0 }.map(UpstreamService.init)
    }
}

/// A branch's link as a service: running from the server's start, stopped at graceful shutdown.
struct UpstreamService: Service {
    let branch: BranchUpstream

    init(_ branch: BranchUpstream) { self.branch = branch }

    func run() async throws {
        try? await gracefulShutdown()
        await branch.link.stop()
    }
}
