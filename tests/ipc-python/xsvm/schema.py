"""Loads the machine-readable schema from docs/ipc.md (the ```json block of
its "Machine-readable schema" section) and indexes it."""

import json
import os
from pathlib import Path

# tests/ipc-python/xsvm/schema.py -> the repository root is three levels up.
DEFAULT_DOC = Path(__file__).resolve().parents[3] / "docs" / "ipc.md"

PRIMITIVES = {"u8": 1, "u16": 2, "u32": 4, "u64": 8, "bool": 1}


class Schema:
    def __init__(self, doc):
        self.doc = doc
        self.frame = doc["frame"]
        self.kinds = self.frame["kinds"]
        self.classes = self.frame["error_classes"]
        self.types = doc["types"]
        self.protocol_errors = {e["name"]: e["code"] for e in doc["protocol_errors"]}
        self.protocol_error_names = {c: n for n, c in self.protocol_errors.items()}
        self.rights = {r["name"]: r["value"] for r in doc["rights"]}
        self.interfaces = {i["name"]: Interface(i, self) for i in doc["interfaces"]}
        self.by_id = {i.id: i for i in self.interfaces.values()}
        # Control messages (kind 5), valid on an endpoint of any interface.
        self.control = {c["opcode"]: c for c in doc["control"]}
        self.control_by_name = {c["name"]: c for c in doc["control"]}

    def rights_value(self, names):
        value = 0
        for n in names:
            value |= self.rights[n]
        return value

    def rights_names(self, value):
        return [n for n, v in self.rights.items() if value & v]


class Interface:
    def __init__(self, raw, schema):
        self.raw = raw
        self.name = raw["name"]
        self.id = raw["id"]
        self.error_enum = raw["error_enum"]
        self.errors = {e["name"]: e["code"] for e in raw["errors"]}
        self.error_names = {c: n for n, c in self.errors.items()}
        self.messages = [Message(m, schema) for m in raw["messages"]]
        self.by_opcode = {m.opcode: m for m in self.messages}
        self.by_name = {m.name: m for m in self.messages}

    def all_rights(self):
        value = 0
        for m in self.messages:
            value |= m.rights
        return value


class Message:
    def __init__(self, raw, schema):
        self.raw = raw
        self.opcode = raw["opcode"]
        self.name = raw["name"]
        self.one_way = raw["one_way"]
        # May be sent again after the server restarted before answering.
        self.idempotent = raw["idempotent"]
        self.rights = schema.rights_value(raw["rights"])
        self.request = raw["request"]
        self.reply = raw.get("reply")


def extract_json(text):
    """The first ```json fenced block of the document."""
    start = text.index("```json\n") + len("```json\n")
    end = text.index("\n```", start)
    return json.loads(text[start:end])


def load(path=None):
    path = Path(path or os.environ.get("XSVM_IPC_DOC") or DEFAULT_DOC)
    return Schema(extract_json(path.read_text()))
