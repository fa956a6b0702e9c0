"""Frames and payloads (docs/ipc.md "Frames", "Payloads", "Answers").

Values: integers and newtypes are ints, bools are bools, enum values are
their variant names, a bitmap is one int (bit i is page i), a list is a
list, a struct is a dict of its fields."""

import struct

from .schema import PRIMITIVES

# magic, version, interface, opcode, kind, handles, payload length, request id
HEADER = struct.Struct("<4sHHHBBIQ")
assert HEADER.size == 24


class Refusal(Exception):
    """A malformed frame or field: `code` is a protocol error name."""

    def __init__(self, code, why=""):
        super().__init__(f"{code}: {why}" if why else code)
        self.code = code


class Header:
    def __init__(self, version, interface, opcode, kind, handles, length, request_id):
        self.version = version
        self.interface = interface
        self.opcode = opcode
        self.kind = kind
        self.handles = handles
        self.length = length
        self.request_id = request_id


class Codec:
    def __init__(self, schema):
        self.s = schema
        f = schema.frame
        self.magic = f["magic"].encode()
        self.header_len = f["header_len"]
        self.max_frame = f["max_frame"]
        self.max_payload = f["max_payload"]
        self.max_handles = f["max_handles"]

    # ---- frames ----

    def frame(self, interface, opcode, kind, handles, request_id, payload):
        length = len(payload)
        head = HEADER.pack(self.magic, 1, interface, opcode, kind, handles, length, request_id)
        return head + bytes(payload)

    def parse(self, data, nfds):
        """Step 2 of "Checking a received frame": the header and lengths.
        Returns the header and the payload."""
        if len(data) > self.max_frame:
            raise Refusal("Oversized", "longer than a frame")
        if len(data) < self.header_len:
            raise Refusal("Truncated", "shorter than a header")
        magic, version, iface, opcode, kind, handles, length, rid = HEADER.unpack_from(data)
        if magic != self.magic:
            raise Refusal("BadMagic")
        if version != 1:
            raise Refusal("UnknownVersion", f"version {version}")
        if kind not in self.s.kinds.values():
            raise Refusal("BadKind", f"kind {kind}")
        if length > self.max_payload:
            raise Refusal("Oversized", f"declares {length} payload bytes")
        body = data[self.header_len:]
        if len(body) < length:
            raise Refusal("Truncated", "payload shorter than declared")
        if len(body) > length:
            raise Refusal("TrailingBytes", "payload longer than declared")
        if handles > self.max_handles or handles != nfds:
            raise Refusal("WrongHandleCount", f"header says {handles}, {nfds} arrived")
        return Header(version, iface, opcode, kind, handles, length, rid), body

    # ---- control frames (docs/ipc.md "Control frames and restarts") ----

    def control_frame(self, interface, name, fields):
        """A control frame on an endpoint of `interface`: request id 0, no
        handles."""
        c = self.s.control_by_name[name]
        payload = self.encode_fields(c["fields"], fields)
        return self.frame(interface, c["opcode"], self.s.kinds["control"], 0, 0, payload)

    def decode_control(self, h, payload):
        """(name, fields) of a parsed control frame; Refusal when it is
        malformed (a receiver then drops it)."""
        c = self.s.control.get(h.opcode)
        if c is None:
            raise Refusal("UnknownOpcode", f"control opcode {h.opcode}")
        if h.handles:
            raise Refusal("WrongHandleCount", "a control frame carries no handles")
        return c["name"], self.decode_fields(c["fields"], payload)

    # ---- payloads ----

    def resolve(self, ty):
        """('prim', name) | ('list', elem, max) | (kind, definition)."""
        if isinstance(ty, dict):
            return ("list", ty["list"], ty["max"])
        if ty in PRIMITIVES:
            return ("prim", ty)
        d = self.s.types[ty]
        return (d["kind"], d)

    def min_size(self, ty):
        r = self.resolve(ty)
        if r[0] == "prim":
            return PRIMITIVES[r[1]]
        if r[0] == "list":
            return 2
        d = r[1]
        if r[0] in ("newtype", "enum"):
            return PRIMITIVES[d["repr"]]
        if r[0] == "bitmap":
            return d["bits"] // 8
        return sum(self.min_size(f["type"]) for f in d["fields"])

    def encode_value(self, ty, v, out):
        r = self.resolve(ty)
        if r[0] == "prim":
            if r[1] == "bool":
                out.append(1 if v else 0)
            else:
                out += int(v).to_bytes(PRIMITIVES[r[1]], "little")
        elif r[0] == "list":
            if len(v) > r[2]:
                raise ValueError(f"{len(v)} elements, at most {r[2]}")
            out += len(v).to_bytes(2, "little")
            for x in v:
                self.encode_value(r[1], x, out)
        elif r[0] == "newtype":
            d = r[1]
            if not d["min"] <= v <= d["max"]:
                raise ValueError(f"{v} outside {d['min']}..{d['max']}")
            out += int(v).to_bytes(PRIMITIVES[d["repr"]], "little")
        elif r[0] == "enum":
            d = r[1]
            code = next(x["code"] for x in d["variants"] if x["name"] == v)
            out += code.to_bytes(PRIMITIVES[d["repr"]], "little")
        elif r[0] == "bitmap":
            out += int(v).to_bytes(r[1]["bits"] // 8, "little")
        else:
            self.encode_fields(r[1]["fields"], v, out)

    def take(self, buf, pos, n):
        if pos + n > len(buf):
            raise Refusal("Truncated", "a field runs past the payload")
        return buf[pos:pos + n], pos + n

    def decode_value(self, ty, buf, pos):
        r = self.resolve(ty)
        if r[0] == "prim":
            raw, pos = self.take(buf, pos, PRIMITIVES[r[1]])
            n = int.from_bytes(raw, "little")
            if r[1] == "bool":
                if n > 1:
                    raise Refusal("FieldOutOfRange", f"bool {n}")
                return n == 1, pos
            return n, pos
        if r[0] == "list":
            raw, pos = self.take(buf, pos, 2)
            count = int.from_bytes(raw, "little")
            if count > r[2]:
                raise Refusal("Oversized", f"list of {count}, at most {r[2]}")
            # Never trust a count the bytes left cannot hold.
            if count * max(1, self.min_size(r[1])) > len(buf) - pos:
                raise Refusal("Truncated", "list longer than the payload")
            items = []
            for _ in range(count):
                x, pos = self.decode_value(r[1], buf, pos)
                items.append(x)
            return items, pos
        d = r[1]
        if r[0] == "newtype":
            raw, pos = self.take(buf, pos, PRIMITIVES[d["repr"]])
            n = int.from_bytes(raw, "little")
            if not d["min"] <= n <= d["max"]:
                raise Refusal("FieldOutOfRange", f"{ty} {n}")
            return n, pos
        if r[0] == "enum":
            raw, pos = self.take(buf, pos, PRIMITIVES[d["repr"]])
            n = int.from_bytes(raw, "little")
            for x in d["variants"]:
                if x["code"] == n:
                    return x["name"], pos
            raise Refusal("FieldOutOfRange", f"{ty} code {n}")
        if r[0] == "bitmap":
            raw, pos = self.take(buf, pos, d["bits"] // 8)
            return int.from_bytes(raw, "little"), pos
        return self.decode_struct(d["fields"], buf, pos)

    def encode_fields(self, fields, values, out=None):
        out = bytearray() if out is None else out
        for f in fields:
            self.encode_value(f["type"], values[f["name"]], out)
        return out

    def decode_struct(self, fields, buf, pos):
        v = {}
        for f in fields:
            v[f["name"]], pos = self.decode_value(f["type"], buf, pos)
        return v, pos

    def decode_fields(self, fields, payload):
        """A whole payload: every byte consumed."""
        v, pos = self.decode_struct(fields, payload, 0)
        if pos != len(payload):
            raise Refusal("TrailingBytes", f"{len(payload) - pos} bytes left over")
        return v

    # ---- error payloads ----

    def error_payload(self, cls, code, missing=0):
        """`cls` is protocol, denied or server; `code` a number."""
        out = bytearray([self.s.classes[cls]]) + code.to_bytes(2, "little")
        if cls == "denied":
            out += missing.to_bytes(4, "little")
        return bytes(out)

    def decode_error(self, payload, iface):
        """(class, code name, missing rights) of an error frame; refuses
        unknown classes and codes as FieldOutOfRange."""
        cls_code, pos = self.decode_value("u8", payload, 0)
        code, pos = self.decode_value("u16", payload, pos)
        names = {c: n for n, c in self.s.classes.items()}
        cls = names.get(cls_code)
        missing = 0
        if cls == "protocol":
            name = self.s.protocol_error_names.get(code)
        elif cls == "denied":
            missing, pos = self.decode_value("u32", payload, pos)
            known = 0
            for v in self.s.rights.values():
                known |= v
            name = "Denied" if missing & ~known == 0 else None
        elif cls == "server":
            name = iface.error_names.get(code)
        else:
            name = None
        if name is None:
            raise Refusal("FieldOutOfRange", f"error class {cls_code} code {code}")
        if pos != len(payload):
            raise Refusal("TrailingBytes", "error payload too long")
        return cls, name, missing

    # ---- golden example values (docs/ipc.md "Golden frames") ----

    EXAMPLES = {"u8": 0xA1, "u16": 0xB2C3, "u32": 0xD4E5F607, "u64": 0x0123456789ABCDEF}
    MASK_WORDS = [0x8000000000000001, 0, 0xFF, 0, 0, 0x0123456789ABCDEF, 0, 0x8000000000000000]

    def example(self, ty):
        r = self.resolve(ty)
        if r[0] == "prim":
            return True if r[1] == "bool" else self.EXAMPLES[r[1]]
        if r[0] == "list":
            return [self.example(r[1]) for _ in range(min(r[2], 3))]
        d = r[1]
        if r[0] == "newtype":
            v = self.EXAMPLES[d["repr"]]
            return v if d["min"] <= v <= d["max"] else d["max"]
        if r[0] == "enum":
            return d["variants"][-1]["name"]
        if r[0] == "bitmap":
            words = self.MASK_WORDS[: d["bits"] // 64]
            return sum(w << (64 * i) for i, w in enumerate(words))
        return {f["name"]: self.example(f["type"]) for f in d["fields"]}

    def example_fields(self, fields):
        return {f["name"]: self.example(f["type"]) for f in fields}
