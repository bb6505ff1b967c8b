// The fuzz targets, as an addition to the root Package.swift: deploy/local/fuzz builds a copy
// of the package whose manifest is Package.swift followed by this file (in .build-fuzz/, with
// Sources/, Tests/ and Fuzz/ linked in), so the targets see the modules themselves, not only the
// products, and a plain `swift build` never compiles them: they need
// `-sanitize=fuzzer,address`, and libFuzzer brings their `main`.
//
// Each target's main hands its test function to libFuzzer's driver (CLibFuzzer), which calls it
// with every input; a finding traps (fatalError, or the sanitizer's report). `deploy/local/fuzz`
// runs them.

package.targets += [
    // libFuzzer's driver, declared for Swift.
    .target(name: "CLibFuzzer", path: "Fuzz/Sources/CLibFuzzer"),
    // JSONParser.parse, and parse → JSONWriter.serialize → parse giving the same value.
    .executableTarget(name: "FuzzJSON", dependencies: ["CLibFuzzer", "OnceJSON"], path: "Fuzz/Sources/FuzzJSON"),
    // EnvelopeDecoder.decode with the domain's types and versions, then the type's handler's
    // decode, as BatchDecoder runs them.
    .executableTarget(
        name: "FuzzEnvelope", dependencies: ["CLibFuzzer", "OnceDomain", "OnceEnvelope", "OnceJSON", "OncePipeline"],
        path: "Fuzz/Sources/FuzzEnvelope"),
    // DeviceImporter.parse, the devices registry's CSV.
    .executableTarget(
        name: "FuzzDevices", dependencies: ["CLibFuzzer", "OnceDomain", "OnceEnvelope"], path: "Fuzz/Sources/FuzzDevices"),
]
