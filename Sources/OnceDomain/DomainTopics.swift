/// Where the domain's outbound events go (CONTRACT.md §3 gives the defaults).
public struct DomainTopics: Sendable, Hashable {
    /// `credits.charged` and `credits.granted`.
    public var creditLedger: String
    /// `batch_action.device_dispatched`.
    public var deviceDispatch: String
    /// `job.created`.
    public var jobsCreated: String

    public init(
        creditLedger: String = "credit-ledger",
        deviceDispatch: String = "device-dispatch",
        jobsCreated: String = "jobs-created"
    ) {
        self.creditLedger = creditLedger
        self.deviceDispatch = deviceDispatch
        self.jobsCreated = jobsCreated
    }
}
