import Foundation

/// The three fuzz targets, by the name that selects them.
enum Target: String, CaseIterable {
    case frames, messages, records

    func run(_ input: UnsafeRawBufferPointer) {
        switch self {
        case .frames: FrameTarget.run(input)
        case .messages: MessageTarget.run(input)
        case .records: RecordTarget.run(input)
        }
    }
}

/// A property that does not hold: a bug. Trapping is how libFuzzer learns of it (it then saves
/// the input); a replay stops at the same place.
func violated(_ message: @autoclosure () -> String) -> Never {
    fatalError(message())
}

#if RAPPORT_FUZZ
/// The target a fuzzing run drives, from `RAPPORT_FUZZ_TARGET`: each target has its own corpus,
/// so no input byte is spent choosing one.
let selectedTarget: Target = {
    let name = ProcessInfo.processInfo.environment["RAPPORT_FUZZ_TARGET"] ?? ""
    guard let target = Target(rawValue: name) else {
        FileHandle.standardError.write(Data("set RAPPORT_FUZZ_TARGET to one of: \(Target.allCases.map(\.rawValue).joined(separator: ", "))\n".utf8))
        exit(2)
    }
    return target
}()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    selectedTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer's driver, for a program that has its own `main`: SwiftPM gives every executable
/// one (renamed, so that tests can link executables), which leaves libFuzzer's unused.
@_silgen_name("LLVMFuzzerRunDriver")
func runFuzzerDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>?, Int) -> CInt
) -> CInt

@main
enum Fuzz {
    static func main() {
        _ = selectedTarget
        // The Swift runtime's backtracer handles these signals from startup, and libFuzzer
        // leaves a handler it finds in place: a trap would print a backtrace and exit without
        // libFuzzer saving the input that caused it.
        for signal in [SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT] { Foundation.signal(signal, SIG_DFL) }
        var argc = CommandLine.argc
        var argv = CommandLine.unsafeArgv
        exit(runFuzzerDriver(&argc, &argv, fuzzTestOneInput))
    }
}
#else
/// Without libFuzzer: replays files through the same targets, for regression runs and for
/// looking at a crash under a debugger.
@main
enum Replay {
    static func main() {
        var arguments = CommandLine.arguments.dropFirst()
        if arguments.first == "seeds", arguments.count == 3 {
            do {
                try Seeds.write(vectors: URL(fileURLWithPath: arguments[arguments.startIndex + 1]),
                                to: URL(fileURLWithPath: arguments[arguments.startIndex + 2]))
            } catch {
                FileHandle.standardError.write(Data("\(error)\n".utf8))
                exit(1)
            }
            return
        }
        if arguments.first == "mutate" {
            arguments.removeFirst()
            guard arguments.count >= 5, let target = Target(rawValue: arguments.removeFirst()),
                  let seconds = Double(arguments.removeFirst()), let seed = UInt64(arguments.removeFirst()) else { usage() }
            let lastInput = arguments.removeFirst()
            let inputs = arguments.flatMap { files(at: URL(fileURLWithPath: $0)) }.map { Array(read($0)) }
            let count = Mutator.run(target, inputs: inputs, seconds: seconds, seed: seed, lastInput: lastInput)
            print("\(target.rawValue): \(count) mutations of \(inputs.count) inputs (seed \(seed)), no property violated")
            return
        }
        guard let name = arguments.popFirst(), let target = Target(rawValue: name), !arguments.isEmpty else { usage() }
        var count = 0
        for path in arguments {
            for file in files(at: URL(fileURLWithPath: path)) {
                let data = read(file)
                // Named first, so that a trap names the input that caused it.
                FileHandle.standardError.write(Data("\(target.rawValue): \(file.path)\n".utf8))
                data.withUnsafeBytes { target.run($0) }
                count += 1
            }
        }
        print("\(target.rawValue): \(count) inputs replayed, no property violated")
    }

    static func usage() -> Never {
        print("""
            usage: rapport-fuzz TARGET FILE-OR-DIRECTORY...   replay inputs (TARGET: \(Target.allCases.map(\.rawValue).joined(separator: ", ")))
                   rapport-fuzz mutate TARGET SECONDS SEED LAST-INPUT FILE-OR-DIRECTORY...
                                                      mutate the inputs at random for SECONDS; each input is
                                                      written to LAST-INPUT before it runs
                   rapport-fuzz seeds VECTORS-DIRECTORY OUT   write the record seeds from the golden vectors
            """)
        exit(1)
    }

    static func read(_ file: URL) -> Data {
        guard let data = FileManager.default.contents(atPath: file.path) else {
            FileHandle.standardError.write(Data("cannot read \(file.path)\n".utf8))
            exit(1)
        }
        return data
    }

    static func files(at url: URL) -> [URL] {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory) else {
            // A mistyped path must not pass as a replay of nothing.
            FileHandle.standardError.write(Data("no such file or directory: \(url.path)\n".utf8))
            exit(1)
        }
        guard isDirectory.boolValue else { return [url] }
        let names = (try? FileManager.default.contentsOfDirectory(atPath: url.path)) ?? []
        return names.filter { !$0.hasPrefix(".") }.sorted().map { url.appendingPathComponent($0) }
    }
}
#endif
