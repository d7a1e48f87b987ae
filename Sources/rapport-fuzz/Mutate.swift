import Foundation
import SyncModel

/// Random mutations of the seed inputs through a target, without libFuzzer: what CI runs on
/// every change, in the normal release build (scripts/fuzz.sh --quick). It finds what a few
/// byte changes away from a known input breaks; the coverage-guided run finds more, in a build
/// of its own that takes minutes.
///
/// The run is the seed's: the same seed and inputs mutate the same way, and each input is
/// written to `lastInput` before it runs, so a trap leaves the input that caused it there.
struct Mutator {
    var random: SeededGenerator
    var pool: [[UInt8]]

    /// The most inputs kept: mutated inputs join the pool now and then, so mutations stack.
    static let poolLimit = 2_000

    mutating func next() -> [UInt8] {
        var input = pool[Int.random(in: 0..<pool.count, using: &random)]
        for _ in 0..<Int.random(in: 1...4, using: &random) { mutate(&input) }
        if pool.count < Self.poolLimit, Int.random(in: 0..<16, using: &random) == 0 { pool.append(input) }
        return input
    }

    private mutating func position(in input: [UInt8], end: Bool = false) -> Int {
        Int.random(in: 0..<(input.count + (end ? 1 : 0)), using: &random)
    }

    private mutating func mutate(_ input: inout [UInt8]) {
        guard !input.isEmpty else { return input.append(UInt8.random(in: 0...255, using: &random)) }
        switch Int.random(in: 0..<8, using: &random) {
        case 0:  // one bit
            input[position(in: input)] ^= 1 << UInt8.random(in: 0..<8, using: &random)
        case 1:  // one byte
            input[position(in: input)] = UInt8.random(in: 0...255, using: &random)
        case 2:  // a value at a boundary: lengths, varints and tags live on these
            input[position(in: input)] = [0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF].randomElement(using: &random)!
        case 3:  // bytes in
            let bytes = (0..<Int.random(in: 1...8, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
            input.insert(contentsOf: bytes, at: position(in: input, end: true))
        case 4:  // a range out
            let start = position(in: input)
            input.removeSubrange(start..<min(input.count, start + Int.random(in: 1...16, using: &random)))
        case 5:  // a range repeated elsewhere
            let start = position(in: input)
            let range = Array(input[start..<min(input.count, start + Int.random(in: 1...32, using: &random))])
            input.insert(contentsOf: range, at: position(in: input, end: true))
        case 6:  // the tail of another input
            let other = pool[Int.random(in: 0..<pool.count, using: &random)]
            let cut = position(in: input, end: true)
            input = Array(input[..<cut]) + other[Int.random(in: 0...other.count, using: &random)...]
        default:  // cut short
            input.removeSubrange(position(in: input)...)
        }
    }

    /// Runs mutated inputs through `target` for `seconds`; returns how many ran.
    static func run(_ target: Target, inputs: [[UInt8]], seconds: Double, seed: UInt64, lastInput: String) -> Int {
        let fd = open(lastInput, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        guard fd >= 0 else {
            FileHandle.standardError.write(Data("cannot write \(lastInput): \(String(cString: strerror(errno)))\n".utf8))
            exit(1)
        }
        defer { close(fd) }
        var mutator = Mutator(random: SeededGenerator(seed: seed), pool: inputs.isEmpty ? [[]] : inputs)
        let deadline = ContinuousClock.now + .milliseconds(Int(seconds * 1_000))
        var count = 0
        while count % 256 != 0 || ContinuousClock.now < deadline {
            let input = mutator.next()
            // Kept before it runs: a trap ends the process here, with the input on disk.
            _ = ftruncate(fd, 0)
            _ = input.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
            input.withUnsafeBytes { target.run($0) }
            count += 1
        }
        return count
    }
}
