/// The states a registered device can be in (CONTRACT.md §1, allowed-states table).
public enum DeviceState: String, Sendable, Hashable, CaseIterable {
    case idle = "IDLE"
    case readyForUse = "READY_FOR_USE"
    case active = "ACTIVE"
    case locked = "LOCKED"
}

/// What a batch action does to each of its devices.
public enum DeviceAction: String, Sendable, Hashable, CaseIterable {
    case register = "REGISTER"
    case deregister = "DEREGISTER"
    case lock = "LOCK"
    case unlock = "UNLOCK"
    case workflowAction = "WORKFLOW_ACTION"
    case exitWorkflow = "EXIT_WORKFLOW"

    /// The device states the action accepts (rule 4); nil for any state.
    public var allowedStates: Set<DeviceState>? {
        switch self {
        case .register: return [.idle]
        case .deregister: return [.readyForUse, .active, .locked]
        case .lock: return [.active]
        case .unlock: return [.locked]
        case .workflowAction: return [.readyForUse, .active, .locked]
        case .exitWorkflow: return nil
        }
    }

    /// Whether the event must name a `workflow_id`.
    public var requiresWorkflow: Bool {
        self == .workflowAction || self == .exitWorkflow
    }
}

/// Why a device of a batch action failed: the `error_code` of its `batch_action_devices` row.
/// In rule order: the first that matches decides.
public enum DeviceErrorCode: String, Sendable, Hashable, CaseIterable {
    case invalidDeviceUID = "INVALID_DEVICE_UID"
    case deviceNotFound = "DEVICE_NOT_FOUND"
    case wrongServiceType = "WRONG_SERVICE_TYPE"
    case wrongState = "WRONG_STATE"
    case alreadyInWorkflow = "ALREADY_IN_WORKFLOW"
    case notInWorkflow = "NOT_IN_WORKFLOW"
}

/// Device uids (rule 1).
public enum DeviceUID {
    /// Whether `uid` is 15 ASCII digits (an IMEI) or 4 to 64 characters of `[A-Za-z0-9-]` (a
    /// serial). The classification statement applies the same rule in SQL
    /// (`BatchActionRequestedHandler.validUIDPattern`); the importer uses this one.
    public static func isValid(_ uid: String) -> Bool {
        let utf8 = uid.utf8
        if utf8.count == 15, utf8.allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }) {
            return true
        }
        return (4...64).contains(utf8.count)
            && utf8.allSatisfy { byte in
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
                    UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"):
                    return true
                default:
                    return false
                }
            }
    }
}
