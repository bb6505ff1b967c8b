import CLibFuzzer
import Glibc
import OnceDomain
import OnceEnvelope

/// One input of libFuzzer: the bytes of a devices registry file.
///
/// Only UTF-8 text reaches the parser (`importFile` rejects the rest before it). Beyond not
/// crashing, every device `parse` accepts must keep the rules it documents: a valid tenant,
/// a deletion time that converts to an instant (`upsert` needs one), and no device twice.
@_cdecl("LLVMFuzzerTestOneInput")
func fuzzDevices(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    let buffer = UnsafeRawBufferPointer(start: data, count: size)
    guard let text = String(validating: buffer, as: UTF8.self) else { return 0 }

    let devices: [DeviceRecord]
    do throws(DeviceImportError) {
        devices = try DeviceImporter().parse(text)
    } catch {
        guard error.line >= 1 else { fatalError("an error names line \(error.line): \(error)") }
        return 0
    }
    var seen = Set<[String]>()
    for device in devices {
        guard EnvelopeDecoder.isValidTenantID(device.tenantID) else {
            fatalError("accepted the tenant \(device.tenantID.debugDescription)")
        }
        if let deletedAt = device.deletedAt, Timestamp.microsecondsSinceEpoch(deletedAt) == nil {
            fatalError("accepted the deletion time \(deletedAt.debugDescription)")
        }
        guard seen.insert([device.tenantID, device.deviceUID]).inserted else {
            fatalError("accepted \(device.tenantID)/\(device.deviceUID) twice")
        }
    }
    return 0
}

// libFuzzer takes over from here: the command line is its options and corpus directories.
exit(once_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzDevices))
