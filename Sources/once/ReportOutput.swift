import Foundation
import Logging
import OncePostgres

/// A text table for people: a header row, then rows, columns separated by two spaces, numbers
/// right-aligned, text left-aligned, widths from the widest cell (in characters).
struct ReportTable {
    enum Alignment {
        case left
        case right
    }

    struct Column {
        var title: String
        var alignment: Alignment
    }

    var columns: [Column]
    private var rows: [Row] = []

    private enum Row {
        case cells([String])
        /// A rule under the widths of the columns, before totals.
        case rule
    }

    init(_ columns: [(String, Alignment)]) {
        self.columns = columns.map { Column(title: $0.0, alignment: $0.1) }
    }

    /// A table whose columns of whole numbers are right-aligned, the others left-aligned.
    init(header: [String], rows: [[String]]) {
        self.init(header.indices.map { index in
            let numeric = rows.allSatisfy { $0[index].isEmpty || Int64($0[index]) != nil }
            return (header[index], numeric && !rows.isEmpty ? .right : .left)
        })
        for row in rows { append(row) }
    }

    /// The lines joined, for printing.
    var text: String { lines().joined(separator: "\n") }

    mutating func append(_ cells: [String]) {
        precondition(cells.count == columns.count, "a row needs one cell per column")
        rows.append(.cells(cells))
    }

    mutating func appendRule() {
        rows.append(.rule)
    }

    /// The table's lines, each indented by `indent` spaces, without trailing spaces.
    func lines(indent: Int = 0) -> [String] {
        var widths = columns.map(\.title.count)
        for case .cells(let cells) in rows {
            for (index, cell) in cells.enumerated() { widths[index] = max(widths[index], cell.count) }
        }
        let margin = String(repeating: " ", count: indent)
        func line(_ cells: [String]) -> String {
            let padded = cells.enumerated().map { index, cell in
                let fill = String(repeating: " ", count: widths[index] - cell.count)
                return columns[index].alignment == .right ? fill + cell : cell + fill
            }
            var text = margin + padded.joined(separator: "  ")
            while text.last == " " { text.removeLast() }
            return text
        }
        var output = [line(columns.map(\.title))]
        for row in rows {
            switch row {
            case .cells(let cells): output.append(line(cells))
            case .rule:
                output.append(margin + String(repeating: "-", count: widths.reduce(0, +) + 2 * (widths.count - 1)))
            }
        }
        return output
    }
}

/// CSV as RFC 4180 writes it (fields with a comma, a quote or a line break are quoted, quotes
/// doubled), except that lines end with LF, which CSV readers accept and shell tools prefer.
enum CSVText {
    static func field(_ text: String) -> String {
        guard text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return text }
        return "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    static func line(_ fields: [String]) -> String {
        fields.map(field).joined(separator: ",")
    }
}

/// A duration for people: `42s`, `3m05s`, `2h07m`, `3d04h`.
func humanDuration(seconds: Double) -> String {
    let total = max(0, Int(seconds.rounded(.down)))
    func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
    switch total {
    case ..<60: return "\(total)s"
    case ..<3600: return "\(total / 60)m\(two(total % 60))s"
    case ..<86_400: return "\(total / 3600)h\(two(total % 3600 / 60))m"
    default: return "\(total / 86_400)d\(two(total % 86_400 / 3600))h"
    }
}

/// Writes a line to standard error (for notes that must not mix into a report on stdout).
func printToStandardError(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// True when standard output is a terminal (progress, clearing the screen).
var standardOutputIsTerminal: Bool { isatty(STDOUT_FILENO) == 1 }

/// `text` on one line: libpq's messages, for one, go on over a second, indented line.
func oneLine(_ text: String) -> String {
    text.split(whereSeparator: \.isNewline).map { $0.trimmingCharacters(in: .whitespaces) }.joined(separator: " ")
}
