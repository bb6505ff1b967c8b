import OnceJSON
import OnceKafka

/// Kafka headers as `outbox.headers` and `dead_letters.headers` store them: a JSON array of
/// `{"name": …, "value": …}` in header order (a value is UTF-8 text, or null), so that a
/// record's repeated or valueless headers survive. Pure functions, any thread.
///
/// The reader also takes the JSON object (name → value) that outbox rows written before this
/// format hold, so rows stored by an older version still publish with their headers.
package enum StoredHeaders {
    package static func json(_ headers: [KafkaHeader]) -> [UInt8] {
        JSONWriter.serialize(value(headers))
    }

    package static func jsonString(_ headers: [KafkaHeader]) -> String {
        JSONWriter.serializeString(value(headers))
    }

    /// The headers of a stored row; none when the text is not one of the two shapes.
    package static func headers(fromJSON text: String) -> [KafkaHeader] {
        switch try? JSONParser.parse(Array(text.utf8)) {
        case .array(let items)?:
            return items.compactMap { item in
                guard let name = item["name"]?.stringValue else { return nil }
                return KafkaHeader(name: name, value: item["value"]?.stringValue.map { Array($0.utf8) })
            }
        case .object(let fields)?:
            return fields.keys.sorted().map { name in
                KafkaHeader(name: name, value: fields[name]?.stringValue.map { Array($0.utf8) })
            }
        default:
            return []
        }
    }

    private static func value(_ headers: [KafkaHeader]) -> JSONValue {
        .array(headers.map { header in
            .object([
                "name": .string(header.name),
                "value": header.value.map { .string(String(decoding: $0, as: UTF8.self)) } ?? .null,
            ])
        })
    }
}
