import Foundation
import OnceJSON

/// OnceJSON's parser and writer against Foundation's `JSONSerialization`, on the workload's own
/// record values: parse every value, and write every parsed value back, in alternating rounds
/// (the best of each side counts). Pure CPU on one thread; no service is involved.
struct JSONResult: Codable, Sendable {
    var values: Int
    var bytes: Int
    var rounds: Int
    /// Values per second, the best round of each.
    var parseOnce: Double
    var parseFoundation: Double
    var writeOnce: Double
    var writeFoundation: Double

    var parseRatio: Double { parseOnce / parseFoundation }
    var writeRatio: Double { writeOnce / writeFoundation }
}

enum JSONStep {
    static func run(values: [[UInt8]], rounds: Int = 3) throws -> JSONResult {
        let datas = values.map { Data($0) }
        let parsed = try values.map { try JSONParser.parse($0) }
        let objects = try datas.map { try JSONSerialization.jsonObject(with: $0) }
        var best = (parseOnce: 0.0, parseFoundation: 0.0, writeOnce: 0.0, writeFoundation: 0.0)
        var sink = 0
        func rate(_ body: () throws -> Void) rethrows -> Double {
            let started = ContinuousClock.now
            try body()
            return Double(values.count) / (ContinuousClock.now - started).seconds
        }
        for _ in 0..<rounds {
            best.parseOnce = max(best.parseOnce, try rate { for value in values { if case .object(let fields) = try JSONParser.parse(value) { sink &+= fields.count } } })
            best.parseFoundation = max(
                best.parseFoundation,
                try rate { for data in datas { sink &+= (try JSONSerialization.jsonObject(with: data) as? NSDictionary)?.count ?? 0 } })
            best.writeOnce = max(best.writeOnce, rate { for value in parsed { sink &+= JSONWriter.serialize(value).count } })
            best.writeFoundation = max(
                best.writeFoundation,
                try rate { for object in objects { sink &+= try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys]).count } })
        }
        precondition(sink != 0)
        return JSONResult(
            values: values.count, bytes: values.reduce(0) { $0 + $1.count }, rounds: rounds,
            parseOnce: best.parseOnce, parseFoundation: best.parseFoundation,
            writeOnce: best.writeOnce, writeFoundation: best.writeFoundation)
    }
}
