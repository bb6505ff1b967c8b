import CLibFuzzer
import Glibc
import OnceDomain
import OnceEnvelope

/// One input of libFuzzer: the bytes of a devices registry file.
///
/// Only UTF-8 text reaches the parser (`importFile` rejects the rest before it). Beyond not
/// crashing, every device `parse` accepts must keep the rules it documents: a valid tenant,
/// a deletion time that converts to an instant (`upsert` needs one), and no device twice; and
/// the devices written out again must read back the same.
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
    checkRoundTrip(devices)
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

/// The accepted devices written out as a registry file, every field quoted, parse to the same
/// devices: what the reader takes apart, quoting puts back together.
private func checkRoundTrip(_ devices: [DeviceRecord]) {
    func quoted(_ field: String?) -> String {
        var text = String.UnicodeScalarView()
        text.append("\"")
        for scalar in (field ?? "").unicodeScalars {
            if scalar == "\"" { text.append("\"") }
            text.append(scalar)
        }
        text.append("\"")
        return String(text)
    }
    var lines = [DeviceImporter.columns.joined(separator: ",")]
    for device in devices {
        let fields = [
            device.tenantID, device.deviceUID, device.state.rawValue, device.serviceTypeID.map(String.init),
            device.workflowID, device.deletedAt,
        ]
        lines.append(fields.map(quoted).joined(separator: ","))
    }
    let text = lines.joined(separator: "\n") + "\n"
    do throws(DeviceImportError) {
        let again = try DeviceImporter().parse(text)
        guard again == devices else { fatalError("written out and read again: \(devices) became \(again)") }
    } catch {
        fatalError("written out, the devices are rejected: \(error)\n\(text)")
    }
}

// libFuzzer takes over from here: the command line is its options and corpus directories.
exit(once_fuzz_run(CommandLine.argc, CommandLine.unsafeArgv, fuzzDevices))
