internal import CRdKafka

/// Where a group rebalance passes from librdkafka to Swift: the one place that answers it.
///
/// librdkafka calls the callback installed here synchronously on the consumer's thread, inside
/// a consumer poll or the consumer close, and waits for it before it acknowledges the change.
/// - On an assignment it asks the listener where each partition starts, writes those offsets
///   into librdkafka's list, assigns the list (incrementally under the cooperative protocol,
///   wholesale under an eager one) and records `.assigned`.
/// - On a revoke it tells the listener first, then unassigns (incrementally, or everything
///   under an eager protocol) and records `.revoked`, or `.lost` when librdkafka reports that
///   the assignment was lost rather than given up.
/// - Any other code is recorded as an error and the whole assignment is dropped.
///
/// Errors: nothing here throws, since C is the caller; a failed incremental (un)assign is
/// recorded in the consumer's `RDKafkaContext`, and the next poll returns it.
enum RebalanceHandoff {
    /// Routes the rebalances of the instance made from `conf` here.
    static func install(on conf: OpaquePointer) {
        rd_kafka_conf_set_rebalance_cb(conf, onRebalance)
    }

    fileprivate static func assign(
        _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
        on rk: OpaquePointer,
        context: RDKafkaContext
    ) {
        let partitions = partitionEntries(list).map(\.partition)
        let starts = context.rebalanceListener?.partitionsAssigned(partitions) ?? [:]
        setOffsets(starts, in: list)
        if isCooperative(rk) {
            if let error = rd_kafka_incremental_assign(rk, list) {
                context.record(KafkaError(consuming: error))
            }
        } else {
            rd_kafka_assign(rk, list)
        }
        context.record(.assigned(partitions))
    }

    fileprivate static func revoke(
        _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
        on rk: OpaquePointer,
        context: RDKafkaContext
    ) {
        let partitions = partitionEntries(list).map(\.partition)
        context.rebalanceListener?.partitionsRevoked(partitions)
        let lost = rd_kafka_assignment_lost(rk) != 0
        if isCooperative(rk) {
            if let error = rd_kafka_incremental_unassign(rk, list) {
                context.record(KafkaError(consuming: error))
            }
        } else {
            rd_kafka_assign(rk, nil)
        }
        context.record(lost ? .lost(partitions) : .revoked(partitions))
    }

    fileprivate static func fail(_ err: rd_kafka_resp_err_t, on rk: OpaquePointer, context: RDKafkaContext) {
        context.record(KafkaError(err))
        rd_kafka_assign(rk, nil)
    }

    private static func isCooperative(_ rk: OpaquePointer) -> Bool {
        String(cString: rd_kafka_rebalance_protocol(rk)) == "COOPERATIVE"
    }
}

/// librdkafka's rebalance callback; its opaque is the consumer's `RDKafkaContext`.
private func onRebalance(
    _ rk: OpaquePointer?,
    _ err: rd_kafka_resp_err_t,
    _ list: UnsafeMutablePointer<rd_kafka_topic_partition_list_t>?,
    _ opaque: UnsafeMutableRawPointer?
) {
    guard let rk, let opaque else { return }
    let context = Unmanaged<RDKafkaContext>.fromOpaque(opaque).takeUnretainedValue()
    switch err {
    case RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS:
        RebalanceHandoff.assign(list, on: rk, context: context)
    case RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS:
        RebalanceHandoff.revoke(list, on: rk, context: context)
    default:
        RebalanceHandoff.fail(err, on: rk, context: context)
    }
}
