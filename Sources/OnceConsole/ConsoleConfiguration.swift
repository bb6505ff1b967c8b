import Foundation
import OncePipeline

/// What the console serves and for whom: the consumer group, its topics, the broker (optional:
/// without one the pages that need it say so), and the operator token. A `Sendable` value.
public struct ConsoleConfiguration: Sendable {
    public var consumerGroup: String
    public var topics: [String]
    /// Kafka bootstrap servers; nil when the console runs against the database alone.
    public var brokers: String?
    public var kafkaProperties: [String: String]
    /// `ONCE_CONSOLE_TOKEN`; nil or empty keeps the console read-only.
    public var token: String?
    public var deadLetterTopic: String

    public init(
        consumerGroup: String, topics: [String], brokers: String?, kafkaProperties: [String: String] = [:],
        token: String?, deadLetterTopic: String = PipelineDefaults.deadLetterTopic
    ) {
        self.consumerGroup = consumerGroup
        self.topics = topics
        self.brokers = brokers
        self.kafkaProperties = kafkaProperties
        self.token = token
        self.deadLetterTopic = deadLetterTopic
    }

    /// The environment variable that holds the operator token.
    public static let tokenVariable = "ONCE_CONSOLE_TOKEN"
}

/// Where the console may listen: loopback always; any other address only with a token, since
/// its actions would otherwise be open to the network. Pure logic.
public enum ConsoleListenPolicy {
    /// True for `localhost`, 127.0.0.0/8 and `::1`.
    public static func isLoopback(_ host: String) -> Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }

    /// Nil when the console may listen on `host`; otherwise the one line that says why not.
    public static func refusal(host: String, token: String?) -> String? {
        guard !isLoopback(host), (token ?? "").isEmpty else { return nil }
        return "the console does not listen on \(host), which is not a loopback address, without an operator token: "
            + "set \(ConsoleConfiguration.tokenVariable), or listen on 127.0.0.1"
    }
}
