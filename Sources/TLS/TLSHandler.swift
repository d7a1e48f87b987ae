import COpenSSL
import NIOCore

/// User inbound events fired by ``TLSHandler``.
public enum TLSEvent: Sendable, Equatable {
    /// The handshake succeeded (including pin verification on clients).
    /// `version` is OpenSSL's name for it, e.g. `"TLSv1.3"`.
    case handshakeCompleted(alpn: String?, version: String)
    /// The peer sent close_notify; the handler answers with its own and closes.
    case closeNotifyReceived
}

/// Terminates TLS on a channel: ciphertext below, plaintext `ByteBuffer`s above.
///
/// OpenSSL never touches the socket: network bytes are fed into a memory BIO
/// and whatever OpenSSL wants to send is drained from another, so all I/O stays
/// on NIO's event loop and nothing blocks. Like every NIO handler it is
/// confined to its channel's event loop, hence not `Sendable`.
///
/// Application writes issued before the handshake completes are buffered and
/// sent, in order, once it does (if they were flushed). Errors are reported as
/// ``TLSError`` through `errorCaught`, after which the channel is closed.
public final class TLSHandler: ChannelDuplexHandler {
    public typealias InboundIn = ByteBuffer
    public typealias InboundOut = ByteBuffer
    public typealias OutboundIn = ByteBuffer
    public typealias OutboundOut = ByteBuffer

    private enum State {
        /// Channel not active yet.
        case idle
        case handshaking
        case active
        /// Closed or failed; the `SSL` must not be used any more.
        case closed
    }

    private var state: State = .idle
    private let connection: SSLConnection
    /// Plaintext not yet handed to OpenSSL, oldest first.
    private var pendingWrites = CircularBuffer<(data: ByteBuffer, promise: EventLoopPromise<Void>?)>()
    /// How many of `pendingWrites` (from the front) the application has flushed.
    private var flushedWriteCount = 0
    private var receivedCloseNotify = false
    private var outputClosed = false

    /// The ALPN protocol agreed on, once the handshake has completed.
    public private(set) var negotiatedALPN: String?
    /// The protocol version (e.g. `"TLSv1.3"`), once the handshake has completed.
    public private(set) var negotiatedVersion: String?

    /// Creates a handler for one connection; the role (client or server) comes
    /// from `context`'s configuration.
    public init(context: TLSContext) throws {
        self.connection = try SSLConnection(context: context)
    }

    private var ssl: OpaquePointer { connection.ssl }
    private var isClient: Bool { !connection.context.configuration.isServer }

    // MARK: - Lifecycle

    public func handlerAdded(context: ChannelHandlerContext) {
        if context.channel.isActive {
            startHandshake(context: context)
        }
    }

    public func handlerRemoved(context: ChannelHandlerContext) {
        state = .closed
        failPendingWrites(ChannelError.ioOnClosedChannel)
    }

    public func channelActive(context: ChannelHandlerContext) {
        context.fireChannelActive()
        startHandshake(context: context)
    }

    public func channelInactive(context: ChannelHandlerContext) {
        let previous = state
        state = .closed
        failPendingWrites(ChannelError.ioOnClosedChannel)
        switch previous {
        case .handshaking:
            context.fireErrorCaught(TLSError(operation: .handshake, message: "connection closed by peer during the handshake"))
        case .active where !receivedCloseNotify:
            // Without close_notify we cannot tell a finished stream from a truncated one.
            context.fireErrorCaught(TLSError(operation: .read, message: "connection closed without close_notify (unclean shutdown)"))
        default:
            break
        }
        context.fireChannelInactive()
    }

    // MARK: - Inbound

    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let buffer = unwrapInboundIn(data)
        switch state {
        case .closed:
            return // Late bytes after a failure or close are meaningless.
        case .idle:
            state = .handshaking
        case .handshaking, .active:
            break
        }
        let fed = buffer.withUnsafeReadableBytes { bytes -> Bool in
            var offset = 0
            while offset < bytes.count {
                let chunk = Int32(clamping: bytes.count - offset)
                let written = BIO_write(connection.networkInput, bytes.baseAddress! + offset, chunk)
                guard written > 0 else { return false }
                offset += Int(written)
            }
            return true
        }
        guard fed else {
            fail(context: context, TLSError.fromQueue(.read, "cannot buffer received bytes"))
            return
        }
        if state == .handshaking {
            doHandshake(context: context)
        }
        if state == .active {
            readPlaintext(context: context)
        }
    }

    private func startHandshake(context: ChannelHandlerContext) {
        guard state == .idle else { return }
        state = .handshaking
        // For a server this just returns WANT_READ; a client emits its ClientHello.
        doHandshake(context: context)
    }

    private func doHandshake(context: ChannelHandlerContext) {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        guard result == 1 else {
            let code = SSL_get_error(ssl, result)
            if code == SSL_ERROR_WANT_READ || code == SSL_ERROR_WANT_WRITE {
                // Memory BIOs never block writes, so both mean "send what we have, wait for the peer".
                writeNetworkOutput(context: context, promise: nil)
                context.flush()
                return
            }
            let verify = SSL_get_verify_result(ssl)
            let verifyText = verify == X509_V_OK ? nil : String(cString: X509_verify_cert_error_string(verify))
            fail(context: context, TLSError.fromQueue(.handshake, "handshake failed (SSL_get_error \(code))", verifyResult: verifyText))
            return
        }

        // Check the pin before releasing our pending output: under TLS 1.3 that
        // holds back the client Finished, so a pinned-out server never sees a
        // completed handshake.
        if isClient, let expected = connection.context.spkiPin {
            if let error = pinMismatch(expected: expected) {
                fail(context: context, error, sendPendingOutput: false)
                return
            }
        }
        state = .active
        var alpnPointer: UnsafePointer<UInt8>? = nil
        var alpnLength: UInt32 = 0
        SSL_get0_alpn_selected(ssl, &alpnPointer, &alpnLength)
        if let alpnPointer, alpnLength > 0 {
            negotiatedALPN = String(decoding: UnsafeBufferPointer(start: alpnPointer, count: Int(alpnLength)), as: UTF8.self)
        }
        let version = String(cString: SSL_get_version(ssl))
        negotiatedVersion = version

        writeNetworkOutput(context: context, promise: nil)
        encryptFlushedWrites(context: context)
        context.flush()
        guard state == .active else { return }
        context.fireUserInboundEventTriggered(TLSEvent.handshakeCompleted(alpn: negotiatedALPN, version: version))
    }

    private func pinMismatch(expected: [UInt8]) -> TLSError? {
        guard let peer = SSL_get1_peer_certificate(ssl) else {
            return TLSError.fromQueue(.pinVerification, "server presented no certificate to check against the SPKI pin")
        }
        let certificate = X509Handle(taking: peer)
        do {
            let actual = try SPKIPin.sha256(of: certificate.pointer)
            guard actual == expected else {
                return TLSError(
                    operation: .pinVerification,
                    message: "server public key does not match the SPKI pin (expected sha256 \(SPKIPin.hex(expected)), got \(SPKIPin.hex(actual)))"
                )
            }
            return nil
        } catch let error as TLSError {
            return error
        } catch {
            return TLSError(operation: .pinVerification, message: "\(error)")
        }
    }

    /// Decrypts everything available. Re-checks `state` after each delivery
    /// because the application may close the channel from inside `channelRead`.
    private func readPlaintext(context: ChannelHandlerContext) {
        while state == .active {
            var buffer = context.channel.allocator.buffer(capacity: 16 * 1024)
            var result: Int32 = 0
            ERR_clear_error()
            buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: 16 * 1024) { bytes in
                result = SSL_read(ssl, bytes.baseAddress, Int32(clamping: bytes.count))
                return max(0, Int(result))
            }
            if result > 0 {
                context.fireChannelRead(wrapInboundOut(buffer))
                continue
            }
            switch SSL_get_error(ssl, result) {
            case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
                // Post-handshake messages may have produced output (e.g. a KeyUpdate reply).
                writeNetworkOutput(context: context, promise: nil)
                context.flush()
                connection.releaseLargeBuffers()
                return
            case SSL_ERROR_ZERO_RETURN:
                receivedCloseNotify = true
                context.fireUserInboundEventTriggered(TLSEvent.closeNotifyReceived)
                if state == .active {
                    close(context: context, mode: .all, promise: nil)
                }
                return
            case let code:
                fail(context: context, TLSError.fromQueue(.read, "SSL_read failed (SSL_get_error \(code))"))
                return
            }
        }
    }

    // MARK: - Outbound

    public func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        if state == .closed {
            promise?.fail(ChannelError.ioOnClosedChannel)
        } else if outputClosed {
            promise?.fail(ChannelError.outputClosed)
        } else {
            pendingWrites.append((unwrapOutboundIn(data), promise))
        }
    }

    public func flush(context: ChannelHandlerContext) {
        flushedWriteCount = pendingWrites.count
        // Before the handshake the flush is remembered and honoured on completion.
        guard state == .active else { return }
        encryptFlushedWrites(context: context)
        context.flush()
        connection.releaseLargeBuffers()
    }

    /// What the connection's memory BIOs hold room for, in bytes: bounded once it is quiet,
    /// whatever it sent or received before (see `SSLConnection.releaseLargeBuffers`).
    var bufferedCapacity: Int { connection.bufferedCapacity }

    public func close(context: ChannelHandlerContext, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        switch (state, mode) {
        case (_, .input):
            context.close(mode: .input, promise: promise)
        case (.active, .output):
            sendCloseNotify(context: context)
            outputClosed = true
            failPendingWrites(ChannelError.outputClosed)
            context.close(mode: .output, promise: promise)
        case (.active, _):
            sendCloseNotify(context: context)
            state = .closed
            failPendingWrites(ChannelError.ioOnClosedChannel)
            context.close(mode: mode, promise: promise)
        case (.idle, _), (.handshaking, _):
            // Half-closing during a handshake cannot produce a usable connection.
            state = .closed
            failPendingWrites(ChannelError.ioOnClosedChannel)
            context.close(mode: .all, promise: promise)
        case (.closed, _):
            context.close(mode: mode, promise: promise)
        }
    }

    /// Encrypts the flushed prefix of `pendingWrites`; each write's promise is
    /// attached to its own ciphertext so completion order matches write order.
    ///
    /// A write is encrypted a TLS record at a time, its ciphertext moved out of the memory BIO
    /// after each into one buffer sized for the whole write. Handed a whole pull batch (up to
    /// megabytes) at once, the BIO grew to hold all of its ciphertext, copying and wiping what
    /// it held at each doubling, only to be dropped as too large at the flush.
    private func encryptFlushedWrites(context: ChannelHandlerContext) {
        while flushedWriteCount > 0, state == .active, !outputClosed {
            var (data, promise) = pendingWrites.removeFirst()
            flushedWriteCount -= 1
            var ciphertext = context.channel.allocator.buffer(capacity: Self.ciphertextCapacity(plaintext: data.readableBytes))
            while data.readableBytes > 0 {
                ERR_clear_error()
                let result = data.withUnsafeReadableBytes { bytes in
                    SSL_write(ssl, bytes.baseAddress, Int32(min(bytes.count, Self.recordPlaintextBytes)))
                }
                guard result > 0 else {
                    // Memory BIOs grow on demand and renegotiation is disabled, so
                    // SSL_write has no reason to ask for a retry: any failure is fatal.
                    let error = TLSError.fromQueue(.write, "SSL_write failed (SSL_get_error \(SSL_get_error(ssl, result)))")
                    promise?.fail(error)
                    fail(context: context, error)
                    return
                }
                data.moveReaderIndex(forwardBy: Int(result))
                moveNetworkOutput(into: &ciphertext)
            }
            // An empty write still carries what OpenSSL had pending (a post-handshake message),
            // and its promise, even with nothing to send: completion stays in write order.
            moveNetworkOutput(into: &ciphertext)
            context.write(wrapOutboundOut(ciphertext), promise: promise)
        }
    }

    /// The most plaintext one TLS record holds (RFC 8446 5.1).
    static let recordPlaintextBytes = 16 * 1024

    /// Room for the ciphertext of `plaintext` bytes: each record adds its header, the AEAD tag
    /// and the inner content type, 22 bytes with the TLS 1.3 ciphers; 64 leaves a margin.
    static func ciphertextCapacity(plaintext: Int) -> Int {
        plaintext + (plaintext / recordPlaintextBytes + 1) * 64
    }

    /// Appends OpenSSL's pending ciphertext to `buffer`.
    private func moveNetworkOutput(into buffer: inout ByteBuffer) {
        let pending = Int(BIO_ctrl_pending(connection.networkOutput))
        guard pending > 0 else { return }
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pending) { bytes in
            max(0, Int(BIO_read(connection.networkOutput, bytes.baseAddress, Int32(clamping: pending))))
        }
    }

    /// Moves OpenSSL's pending ciphertext to the channel (unflushed). With
    /// nothing pending an empty buffer still carries `promise`, keeping promise
    /// completion in write order.
    private func writeNetworkOutput(context: ChannelHandlerContext, promise: EventLoopPromise<Void>?) {
        let pending = Int(BIO_ctrl_pending(connection.networkOutput))
        guard pending > 0 else {
            if let promise {
                context.write(wrapOutboundOut(context.channel.allocator.buffer(capacity: 0)), promise: promise)
            }
            return
        }
        var buffer = context.channel.allocator.buffer(capacity: pending)
        moveNetworkOutput(into: &buffer)
        context.write(wrapOutboundOut(buffer), promise: promise)
    }

    /// Best effort: a peer that already vanished does not need our goodbye.
    private func sendCloseNotify(context: ChannelHandlerContext) {
        guard !outputClosed else { return }
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
        writeNetworkOutput(context: context, promise: nil)
        context.flush()
    }

    // MARK: - Failure

    /// Reports `error` and closes. By default any alert OpenSSL queued is sent
    /// first, so the peer learns why instead of seeing a bare disconnect.
    private func fail(context: ChannelHandlerContext, _ error: TLSError, sendPendingOutput: Bool = true) {
        guard state != .closed else { return }
        state = .closed
        if sendPendingOutput {
            writeNetworkOutput(context: context, promise: nil)
            context.flush()
        }
        failPendingWrites(error)
        context.fireErrorCaught(error)
        context.close(promise: nil)
    }

    private func failPendingWrites(_ error: Error) {
        // Swap out first: failing a promise runs callbacks that may write again.
        let writes = pendingWrites
        pendingWrites.removeAll()
        flushedWriteCount = 0
        for write in writes {
            write.promise?.fail(error)
        }
    }
}
