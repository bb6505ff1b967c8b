#!/usr/bin/env python3
"""Writes the fixture files of this folder. Deterministic: running it again gives the same bytes.

Usage: python3 Fixtures/generate.py   (from anywhere)
"""
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
T0 = "2026-11-22T10:00:00Z"


def event(event_id, type_, data, tenant="acme", occurred_at=T0, version=1):
    return {"event_id": event_id, "type": type_, "version": version, "tenant_id": tenant,
            "occurred_at": occurred_at, "data": data}


def write(name, lines):
    with open(os.path.join(HERE, name), "w", encoding="utf-8") as f:
        for line in lines:
            f.write(line if isinstance(line, str) else json.dumps(line, separators=(",", ":"), sort_keys=True))
            f.write("\n")


def imei(n):
    return "35693800%07d" % n


# The devices registry: 10,000 IDLE IMEI devices of service type 6 (scenario 1), a few devices in
# each state for the valid batch action, and one device of another tenant.
devices = ["tenant_id,device_uid,state,service_type_id,workflow_id,deleted_at"]
devices += ["acme,%s,IDLE,6,," % imei(n) for n in range(10000)]
devices += [
    "acme,SN-READY-0001,READY_FOR_USE,2,,",
    "acme,SN-ACTIVE-0001,ACTIVE,2,,",
    "acme,SN-LOCKED-0001,LOCKED,2,,",
    "acme,SN-INFLOW-0001,ACTIVE,2,wf-7,",
    "acme,SN-GONE-0001,ACTIVE,2,,2026-01-01T00:00:00Z",
    "globex,SN-GLOBEX-0001,ACTIVE,2,,",
]
write("devices.csv", devices)

# Valid events of each type.
valid = [
    event("grant-acme-1", "credits.granted", {"grant_id": "g-1", "account_id": "acct-1", "credits": 5000}),
    event("grant-acme-2", "credits.granted", {"grant_id": "g-2", "account_id": "acct-2", "credits": 5000}),
    event("done-b-1", "batch.completed", {"batch_id": "b-1", "account_id": "acct-1", "credits": 120}),
    event("done-b-2", "batch.completed", {"batch_id": "b-2", "account_id": "acct-2", "credits": 80}),
    event("ba-lock-1", "batch_action.requested", {
        "batch_action_id": "ba-lock", "action": "LOCK", "service_type_id": None, "workflow_id": None,
        "devices": [{"device_uid": uid} for uid in
                    ["SN-ACTIVE-0001", "SN-LOCKED-0001", "SN-GONE-0001", "SN-GLOBEX-0001", "bad uid!"]]}),
    event("job-req-1", "job.requested", {"request_id": "req-1", "user_id": "u-9", "action_code": 4,
                                         "action_name": "EXPORT", "customer_ids": ["c-1", "c-2"]}),
]
write("valid.jsonl", valid)
write("redeliveries.jsonl", valid[:4])  # the same emissions again: same event ids
write("producer-duplicates.jsonl", [
    dict(e, event_id=e["event_id"] + "-again") for e in valid if e["type"] != "batch_action.requested"
])
write("conflicts.jsonl", [
    event("done-b-1-other", "batch.completed", {"batch_id": "b-1", "account_id": "acct-1", "credits": 999}),
])

poison = [
    '{"event_id": "truncated", "type": "batch.completed"',
    json.dumps({k: v for k, v in event("x", "batch.completed", {"batch_id": "p", "account_id": "a", "credits": 1}).items()
                if k != "event_id"}),
    json.dumps(event("no such id!", "batch.completed", {"batch_id": "p", "account_id": "a", "credits": 1})),
    json.dumps(event("poison-type", "batch.exploded", {})),
    json.dumps(event("poison-version", "batch.completed", {"batch_id": "p", "account_id": "a", "credits": 1}, version=2)),
    json.dumps(event("poison-tenant", "batch.completed", {"batch_id": "p", "account_id": "a", "credits": 1}, tenant="")),
    json.dumps(event("poison-credits", "batch.completed", {"batch_id": "p", "account_id": "a", "credits": -5})),
    json.dumps(event("poison-devices", "batch_action.requested", {
        "batch_action_id": "ba-big", "action": "LOCK", "service_type_id": None, "workflow_id": None,
        "devices": [{"device_uid": imei(n)} for n in range(10001)]})),
    json.dumps(event("poison-job", "job.requested", {"request_id": "req-x", "user_id": "u", "action_code": 1,
                                                    "action_name": "X"})),
]
write("poison.jsonl", poison)

# Scenario 1: 10,000 IDLE devices of service type 6, WORKFLOW_ACTION for service type 2.
write("scenario-1-wrong-service-type.jsonl", [
    event("ba-wst-1", "batch_action.requested", {
        "batch_action_id": "ba-wst", "action": "WORKFLOW_ACTION", "service_type_id": 2, "workflow_id": "wf-1",
        "devices": [{"device_uid": imei(n)} for n in range(10000)]}),
])

# Scenario 2: 25 batches, 119 completions, 83 of them for one batch within 6 seconds; grants first.
loop = [event("grant-loop-%d" % a, "credits.granted", {"grant_id": "g-loop-%d" % a, "account_id": "acct-loop-%d" % a,
                                                       "credits": 100000}) for a in range(1, 6)]
for i in range(83):
    loop.append(event("loop-%03d" % i, "batch.completed",
                      {"batch_id": "batch-loop", "account_id": "acct-loop-1", "credits": 250},
                      occurred_at="2026-11-22T10:00:%02d.%03dZ" % (i * 6 // 83, (i * 6000 // 83) % 1000)))
for b in range(2, 26):
    for k in range(1 if b % 2 else 2):
        loop.append(event("batch-%02d-%d" % (b, k), "batch.completed",
                          {"batch_id": "batch-%02d" % b, "account_id": "acct-loop-%d" % (b % 5 + 1), "credits": 10 * b}))
assert sum(1 for e in loop if e["type"] == "batch.completed") == 119
write("scenario-2-completion-loop.jsonl", loop)

# Scenario 3: one click, two emissions (frontend and backend), one request id.
click = {"request_id": "req-click", "user_id": "u-1", "action_code": 7, "action_name": "PROVISION",
         "customer_ids": ["c-100"]}
write("scenario-3-double-click.jsonl", [
    event("job-click-frontend", "job.requested", click),
    event("job-click-backend", "job.requested", click),
])

# Scenario 4: 1,000 events, to be produced 44 times (`once produce --repeat 44`).
write("scenario-4-44-loaders.jsonl", [
    event("load-%04d" % i, "credits.granted", {"grant_id": "load-%04d" % i, "account_id": "acct-load-%d" % (i % 10),
                                               "credits": 1}) for i in range(1000)
])
