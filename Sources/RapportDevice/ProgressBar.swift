import RapportClient

/// The progress line `rapport sync` redraws on a terminal, as a pure function of the progress
/// and the width, so the drawing is tested without a terminal.
///
/// ```
/// pull [==============>               ]  47%  940/2000 records  1.2 MiB/2.5 MiB
/// ```
///
/// Parts are dropped from the right as the width shrinks (bytes, then records, then the bar),
/// so the line never wraps, which would break the carriage-return redraw.
public enum ProgressBar {
    /// The narrowest bar worth drawing.
    static let minimumBarWidth = 5

    /// The line for `progress`, at most `width` characters.
    public static func render(_ progress: SyncProgress, width: Int) -> String {
        render(phase: progress.phase.rawValue, recordsDone: progress.recordsDone, recordsTotal: progress.recordsTotal,
               bytesDone: progress.bytesDone, bytesTotal: progress.bytesTotal, width: width)
    }

    /// The same from the parts of a `SyncProgress`.
    public static func render(phase: String, recordsDone: Int, recordsTotal: Int, bytesDone: Int, bytesTotal: Int,
                              width: Int) -> String {
        let total = max(recordsTotal, 0)
        let done = min(max(recordsDone, 0), total)
        let fraction = total == 0 ? 1.0 : Double(done) / Double(total)
        let percent = "\(Int((fraction * 100).rounded(.down)))%"
        let percentField = String(repeating: " ", count: max(0, 4 - percent.count)) + percent
        let label = phase.count < 4 ? phase + String(repeating: " ", count: 4 - phase.count) : phase
        let records = "\(done)/\(total) records"
        // A push knows its byte total only as it goes (done == total): show just the amount.
        let bytes = bytesTotal > bytesDone ? "\(formatBytes(bytesDone))/\(formatBytes(bytesTotal))" : formatBytes(bytesDone)

        for extras in [[records, bytes], [records], []] {
            let suffix = ([percentField] + extras).joined(separator: "  ")
            let barWidth = width - label.count - suffix.count - 4  // " [", "] "
            if barWidth >= minimumBarWidth {
                return "\(label) [\(bar(fraction, width: barWidth))] \(suffix)"
            }
        }
        return TextTable.truncate("\(label) \(percent)", to: max(width, 0))
    }

    /// `=` for what is done, `>` at its head, spaces for the rest.
    static func bar(_ fraction: Double, width: Int) -> String {
        let filled = min(width, Int((fraction * Double(width)).rounded(.down)))
        if filled == width { return String(repeating: "=", count: width) }
        if filled == 0 { return String(repeating: " ", count: width) }
        return String(repeating: "=", count: filled - 1) + ">" + String(repeating: " ", count: width - filled)
    }

    /// Binary units with one decimal from KiB on: "512 B", "1.5 KiB", "12.0 MiB".
    public static func formatBytes(_ count: Int) -> String {
        let units = ["KiB", "MiB", "GiB", "TiB"]
        guard count >= 1024 else { return "\(max(count, 0)) B" }
        var value = Double(count) / 1024
        var unit = 0
        while value >= 1024 && unit < units.count - 1 {
            value /= 1024
            unit += 1
        }
        let tenths = Int((value * 10).rounded())
        return "\(tenths / 10).\(tenths % 10) \(units[unit])"
    }
}
