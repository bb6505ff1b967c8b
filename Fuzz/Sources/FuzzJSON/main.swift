import CLibFuzzer
import Glibc
import OnceJSON

/// One input of libFuzzer: any bytes.
///
/// Beyond not crashing, the parser and the writer must agree: the raw-memory and the
/// collection entry points give the same answer; a document that parses serializes to text
/// that parses back to an equal value; and that text is a fixed point of the writer (the
/// writer is deterministic, so serializing the value read back gives the same bytes).
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzJSON(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let buffer = UnsafeRawBufferPointer(start: data, count: size)
    let bytes = Array(buffer)

    let fromMemory = Result { () throws(JSONParseError) in try JSONParser.parse(buffer) }
    let fromBytes = Result { () throws(JSONParseError) in try JSONParser.parse(bytes) }
    guard fromMemory == fromBytes else {
        fatalError("parse(UnsafeRawBufferPointer) gave \(fromMemory), parse([UInt8]) gave \(fromBytes)")
    }
    guard case .success(let value) = fromBytes else { return 0 }

    let text = JSONWriter.serialize(value)
    let reread: JSONValue
    do throws(JSONParseError) {
        reread = try JSONParser.parse(text)
    } catch {
        fatalError("the writer's text does not parse (\(error)): \(String(decoding: text, as: UTF8.self))")
    }
    guard reread == value else {
        fatalError("round trip changed the value: \(value) became \(reread)")
    }
    let again = JSONWriter.serialize(reread)
    guard again == text else {
        fatalError(
            "the writer is not deterministic: \(String(decoding: text, as: UTF8.self)) then \(String(decoding: again, as: UTF8.self))"
        )
    }
    return 0
}

// libFuzzer takes over from here: the command line is its options and corpus directories.
exit(once_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzJSON))
