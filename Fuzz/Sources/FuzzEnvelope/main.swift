import CLibFuzzer
import Glibc
import OnceDomain
import OnceEnvelope
import OnceJSON
import OncePipeline

/// The types and versions `once run` accepts: the domain's handlers, registered as the
/// command line registers them.
let domainVersions: [String: Set<Int>] = {
    var registry = HandlerRegistry()
    Domain.register(into: &registry)
    return registry.supportedVersions
}()

/// One input of libFuzzer: a record value.
///
/// It goes the way `BatchDecoder` takes a record: the envelope's rules, then the decode of
/// the handler of its type. Beyond not crashing, what comes out must keep the promises the
/// pipeline relies on: an accepted envelope's fields pass their rules (its `occurred_at` gives
/// the claim's time partition), a rejection's readable fields are valid too, and a dead
/// letter's message stays short whatever the record holds.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzEnvelope(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let value = Array(UnsafeRawBufferPointer(start: data, count: size))
    do throws(EnvelopeError) {
        let envelope = try EnvelopeDecoder.decode(value, supportedVersions: domainVersions)
        check(envelope)
        checkRoundTrip(envelope)
        try decodeData(envelope)
    } catch {
        check(error)
    }
    return 0
}

/// The handler's `decode` for the envelope's type (the registry's own table is internal to
/// the pipeline).
private func decodeData(_ envelope: Envelope) throws(EnvelopeError) {
    switch envelope.type {
    case BatchCompletedHandler.eventType: _ = try BatchCompletedHandler().decode(envelope)
    case CreditsGrantedHandler.eventType: _ = try CreditsGrantedHandler().decode(envelope)
    case BatchActionRequestedHandler.eventType: _ = try BatchActionRequestedHandler().decode(envelope)
    case JobRequestedHandler.eventType: _ = try JobRequestedHandler().decode(envelope)
    default: fatalError("the decoder accepted the type \(envelope.type), which no handler takes")
    }
}

private func check(_ envelope: Envelope) {
    guard EnvelopeDecoder.isValidEventID(envelope.eventID) else {
        fatalError("accepted the event id \(envelope.eventID.debugDescription)")
    }
    guard EnvelopeDecoder.isValidTenantID(envelope.tenantID) else {
        fatalError("accepted the tenant \(envelope.tenantID.debugDescription)")
    }
    guard domainVersions[envelope.type]?.contains(envelope.version) == true else {
        fatalError("accepted version \(envelope.version) of \(envelope.type.debugDescription)")
    }
    guard Timestamp.microsecondsSinceEpoch(envelope.occurredAt) != nil else {
        fatalError("accepted occurred_at \(envelope.occurredAt.debugDescription)")
    }
}

/// An accepted envelope written out as JSON (`jsonValue`, as outbound events are) decodes to
/// itself.
private func checkRoundTrip(_ envelope: Envelope) {
    let text = JSONWriter.serialize(envelope.jsonValue)
    do throws(EnvelopeError) {
        let again = try EnvelopeDecoder.decode(text, supportedVersions: domainVersions)
        guard again == envelope else {
            fatalError("\(envelope) written out decodes to \(again)")
        }
    } catch {
        fatalError("\(envelope) written out is rejected: \(error)")
    }
}

private func check(_ error: EnvelopeError) {
    if let eventID = error.eventID, !EnvelopeDecoder.isValidEventID(eventID) {
        fatalError("a rejection names the event id \(eventID.debugDescription)")
    }
    if let tenantID = error.tenantID, !EnvelopeDecoder.isValidTenantID(tenantID) {
        fatalError("a rejection names the tenant \(tenantID.debugDescription)")
    }
    if let occurredAt = error.occurredAt, Timestamp.microsecondsSinceEpoch(occurredAt) == nil {
        fatalError("a rejection names occurred_at \(occurredAt.debugDescription)")
    }
    guard error.message.utf8.count <= 1024 else {
        fatalError("a dead letter's message of \(error.message.utf8.count) bytes: \(error.message.prefix(200))…")
    }
}

// libFuzzer takes over from here: the command line is its options and corpus directories.
exit(once_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzEnvelope))
