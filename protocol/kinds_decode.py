# The receiving side of protocol.kinds: the dict views of the kinds table that
# the gateway and the tools read, payload checking, scaling and bit names.
# A node only encodes and never loads this module; protocol.kinds imports it
# on first use of any name below (kinds.KINDS, kinds.unpack, ...).

from .errors import PAYLOAD_MISSING, PAYLOAD_SHAPE, FrameError
from .kinds import NULLABLE, OPTIONAL, TABLE, check, field_range


def _field_dict(field):
    # One TABLE field tuple as the documented dict (keys only where they apply).
    name, ftype, unit, mul, div, lo, hi, extra, flags = field
    out = {"name": name, "type": ftype, "unit": unit}
    if mul != 1:
        out["mul"] = mul
    if div != 1:
        out["div"] = div
    if ftype == "bits":
        out["bits"] = extra
    else:
        out["min"] = lo
        out["max"] = hi
        if ftype == "series":
            out["len"] = extra
    if flags & OPTIONAL:
        out["optional"] = True
    if flags & NULLABLE:
        out["nullable"] = True
    return out


KINDS = {}
KIND_IDS = {}
for _kid, _name, _fields in TABLE:
    KINDS[_kid] = {"name": _name, "fields": tuple([_field_dict(f) for f in _fields])}
    KIND_IDS[_name] = _kid

_INT = 0        # plan codes: a plain integer field,
_NULLABLE = 1   # an integer field that may be null,
_SERIES = 2     # an array of integers


def _plan(kind):
    # Per field: (name, code, lowest, highest, TABLE field), precomputed once
    # per kind so that unpack() checks a payload without dictionary look-ups.
    plan = kind.get("_plan")
    if plan is None:
        fields = ()
        for entry in TABLE:
            if entry[1] == kind["name"]:
                fields = entry[2]
        plan = []
        required = 0
        for field in fields:
            lo, hi = field_range(field)
            if field[1] == "series":
                code = _SERIES
            elif field[8] & NULLABLE:
                code = _NULLABLE
            else:
                code = _INT
            plan.append((field[0], code, lo, hi, field))
            if not field[8] & OPTIONAL:
                required += 1
        plan = tuple(plan)
        kind["_plan"] = plan
        kind["_required"] = required
    return plan


def unpack(kind, payload):
    """The raw field values (name -> value) of a decoded CBOR payload array."""
    if not isinstance(payload, list):
        raise FrameError(PAYLOAD_SHAPE, "payload is not an array")
    plan = _plan(kind)
    n = len(payload)
    if n > len(plan):
        raise FrameError(PAYLOAD_SHAPE, "more elements than fields")
    if n < kind["_required"]:
        raise FrameError(PAYLOAD_MISSING, plan[n][0])
    values = {}
    for pos in range(n):
        name, code, lo, hi, field = plan[pos]
        value = payload[pos]
        if code == _SERIES:
            if value.__class__ is not list:
                check(field, value)  # raises with the precise reason
            for item in value:
                if item.__class__ is not int or item < lo or item > hi:
                    check(field, value)
            if len(value) < field[7][0] or len(value) > field[7][1]:
                check(field, value)
        elif value.__class__ is not int or value < lo or value > hi:  # noqa: SIM102
            # (nested, not and-ed: the common in-range case tests one condition)
            if value is not None or code != _NULLABLE:
                check(field, value)
        values[name] = value
    return values


def scaled(field, raw):
    """The reading of one raw value in the field's unit (int where exact, else float)."""
    if raw is None:
        return None
    mul = field.get("mul", 1)
    div = field.get("div", 1)
    if field["type"] == "series":
        return [scaled_number(item, mul, div) for item in raw]
    return scaled_number(raw, mul, div)


def scaled_number(raw, mul, div):
    """raw * mul / div, as an int when it divides exactly."""
    num = raw * mul
    if div == 1 or num % div == 0:
        return num // div
    return num / div


def bit_names(field, raw):
    """The names of the bits set in a bit-set value, in bit order."""
    names = []
    bits = field["bits"]
    for pos in range(len(bits)):
        if raw & (1 << pos):
            names.append(bits[pos])
    return names


def field_by_name(kind, name):
    """The field entry called `name` in `kind`, or None."""
    for field in kind["fields"]:
        if field["name"] == name:
            return field
    return None


def readings(kind, values):
    """Readings in their units: name -> {"value", "unit"}; bit sets -> list of bit names.

    Fields absent from `values` (trailing optional ones) are absent here too.
    """
    out = {}
    for field in kind["fields"]:
        name = field["name"]
        if name not in values:
            continue
        raw = values[name]
        if field["type"] == "bits":
            out[name] = bit_names(field, raw)
        else:
            out[name] = {"value": scaled(field, raw), "unit": field["unit"]}
    return out
