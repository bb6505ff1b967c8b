import OnceKafka
import OnceOperations

/// The planner form in the operations API's terms; a plan row travels to the confirm step as
/// `topic|partition|current|target|generation|processed|start|end|owner`.
extension ConsoleOffsetForm {
    static func scope(_ text: String) throws -> OffsetResetScope {
        let items = try items(text)
        if items.isEmpty { return .allTopics }
        return .topics(items.map { OffsetResetScope.Selection(topic: $0.topic, partitions: $0.partitions) })
    }

    static func target(kind: String, value: String) throws -> OffsetResetTarget {
        switch kind {
        case "earliest": return .earliest
        case "latest": return .latest
        case "offset":
            let offset = try integer(value, field: "offset")
            guard offset >= 0 else { throw ConsoleFormError("offset: “\(value)” is negative") }
            return .offset(offset)
        case "datetime": return .datetime(milliseconds: try milliseconds(value))
        case "shift-by": return .shiftBy(try integer(value, field: "shift by"))
        case "by-duration": return .byDuration(try duration(value))
        default: throw ConsoleFormError("target: “\(kind)” is not one the planner knows")
        }
    }

    static func encode(_ row: OffsetResetPlan.Row) -> String {
        encodeFields([
            row.partition.topic, "\(row.partition.partition)", row.current.map(String.init) ?? "", "\(row.target)",
            row.generation.map(String.init) ?? "", "\(row.alreadyProcessed)", "\(row.logStart)", "\(row.logEnd)",
            row.owner ?? "",
        ])
    }

    static func decode(_ value: String) throws -> OffsetResetPlan.Row {
        let f = try decodeFields(value, count: 9)
        guard isTopicName(f[0]), let partition = Int32(f[1]), partition >= 0 else {
            throw ConsoleFormError("a plan row names no valid partition; plan again")
        }
        let current: Int64? = f[2].isEmpty ? nil : try integer(f[2], field: "current")
        let target = try integer(f[3], field: "target")
        guard target >= 0 else { throw ConsoleFormError("a plan row's target is negative; plan again") }
        return OffsetResetPlan.Row(
            partition: TopicPartition(f[0], partition), current: current, target: target,
            logStart: try integer(f[6], field: "log start"), logEnd: try integer(f[7], field: "log end"),
            alreadyProcessed: try integer(f[5], field: "already processed"), owner: f[8].isEmpty ? nil : f[8],
            generation: f[4].isEmpty ? nil : try integer(f[4], field: "generation"))
    }
}
