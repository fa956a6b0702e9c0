#!/usr/bin/env python3
"""The Python codec against the golden frames (docs/ipc.md "Golden
frames"): rebuilds tests/golden/ipc-v1.txt from the schema and the example
rules byte for byte, and decodes every frame of it back to what it encodes.
Prints PASS/FAIL lines; exits 1 on any failure."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from xsvm import schema as schema_mod  # noqa: E402
from xsvm.codec import Codec, Refusal  # noqa: E402

GOLDEN = Path(__file__).resolve().parents[1] / "golden" / "ipc-v1.txt"
GOLDEN_ID = 0x1122334455667788
# The generation of the golden `Restarted` control frame.
GOLDEN_GENERATION = 0x01020304


def rebuild(schema, codec):
    lines = ["# xe-svm IPC wire format v1: <interface> <kind> <message> <frame hex>"]
    k = schema.kinds
    for iface in sorted(schema.interfaces.values(), key=lambda i: i.id):
        for m in iface.messages:
            fields = m.request["fields"]
            payload = codec.encode_fields(fields, codec.example_fields(fields))
            kind, rid = (k["notification"], 0) if m.one_way else (k["request"], GOLDEN_ID)
            f = codec.frame(iface.id, m.opcode, kind, m.request["handles"], rid, payload)
            lines.append(f"{iface.name} request {m.name} {f.hex()}")
        for m in iface.messages:
            if m.reply is None:
                continue
            fields = m.reply["fields"]
            payload = codec.encode_fields(fields, codec.example_fields(fields))
            f = codec.frame(iface.id, m.opcode, k["reply"], m.reply["handles"], GOLDEN_ID, payload)
            lines.append(f"{iface.name} reply {m.name} {f.hex()}")
        for name, code in iface.errors.items():
            payload = codec.error_payload("server", code)
            f = codec.frame(iface.id, 1, k["error"], 0, GOLDEN_ID, payload)
            lines.append(f"{iface.name} error {name} {f.hex()}")
    for name, code in sorted(schema.protocol_errors.items(), key=lambda e: e[1]):
        f = codec.frame(1, 1, k["error"], 0, GOLDEN_ID, codec.error_payload("protocol", code))
        lines.append(f"any protocol-error {name} {f.hex()}")
    missing = schema.rights["SNAPSHOT"] | schema.rights["ADVISE"]
    f = codec.frame(1, 7, k["error"], 0, GOLDEN_ID, codec.error_payload("denied", 0, missing))
    lines.append(f"any denied SNAPSHOT|ADVISE {f.hex()}")
    pager = schema.interfaces["Pager"].id
    f = codec.control_frame(pager, "Restarted", {"generation": GOLDEN_GENERATION})
    lines.append(f"any control Restarted {f.hex()}")
    return lines


def round_trip(schema, codec, line):
    iface_name, kind, name, hexed = line.split()
    frame = bytes.fromhex(hexed)
    h, payload = codec.parse(frame, frame[11])
    iface = schema.by_id[h.interface] if iface_name == "any" else schema.interfaces[iface_name]
    if kind == "control":
        got, fields = codec.decode_control(h, payload)
        assert got == name, f"control opcode {h.opcode} is {got}"
        assert codec.control_frame(h.interface, got, fields) == frame, "re-encoding differs"
        return
    if kind in ("request", "reply"):
        m = iface.by_opcode[h.opcode]
        fields = m.request["fields"] if kind == "request" else m.reply["fields"]
        values = codec.decode_fields(fields, payload)
        assert m.name == name, f"opcode {h.opcode} is {m.name}"
        assert codec.encode_fields(fields, values) == payload, "re-encoding differs"
        return
    cls, code_name, missing = codec.decode_error(payload, iface)
    assert code_name in (name, "Denied"), f"{code_name} != {name}"


def negative(codec):
    """Malformed fields are refused with the documented codes."""
    cases = [
        ("bool", b"\x02", "FieldOutOfRange"),
        ("PageCount", b"\x00\x00", "FieldOutOfRange"),
        ("GpuId", b"\x10", "FieldOutOfRange"),
        ("Advice", b"\x10", "FieldOutOfRange"),
        ("u64", b"\x01\x02", "Truncated"),
        ({"list": "PageStateCode", "max": 512}, (513).to_bytes(2, "little"), "Oversized"),
        ({"list": "PageStateCode", "max": 512}, (5).to_bytes(2, "little") + b"\x00", "Truncated"),
    ]
    for ty, data, want in cases:
        try:
            codec.decode_value(ty, data, 0)
        except Refusal as e:
            assert e.code == want, f"{ty}: {e.code}, not {want}"
            continue
        raise AssertionError(f"{ty} {data.hex()} decoded")


def main():
    schema = schema_mod.load()
    codec = Codec(schema)
    failed = 0
    golden = GOLDEN.read_text().splitlines()
    ours = rebuild(schema, codec)
    bad = [(i, a, b) for i, (a, b) in enumerate(zip(golden, ours)) if a != b]
    if bad or len(golden) != len(ours):
        failed += 1
        i, a, b = bad[0] if bad else (min(len(golden), len(ours)), "", "")
        print(f"FAIL golden.rebuild: line {i + 1}\n  file: {a}\n  ours: {b}")
    else:
        print(f"PASS golden.rebuild: {len(ours) - 1} frames byte for byte")
    for line in golden[1:]:
        try:
            round_trip(schema, codec, line)
        except (AssertionError, Refusal, KeyError) as e:
            failed += 1
            print(f"FAIL golden.decode.{'.'.join(line.split()[:3])}: {e!r}")
    if not failed:
        print(f"PASS golden.decode: {len(golden) - 1} frames")
    try:
        negative(codec)
        print("PASS codec.refusals")
    except AssertionError as e:
        failed += 1
        print(f"FAIL codec.refusals: {e}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
