# The sensor kinds table: the one place that says what a frame of each kind
# carries. A payload is a CBOR array whose elements are the kind's fields in
# the order listed here. Trailing optional fields may be left off; a nullable
# field may be CBOR null when its sensor has no valid value.
#
# Values travel as scaled integers: the reading is raw * mul / div in `unit`.
# Adding a sensor kind means adding one entry to KINDS, nothing else: encoder,
# decoder, gateway JSON, docs tables and tests all read this table.
#
# Field keys:
#   name      reading name (MQTT JSON key), in the field's own words
#   type      "u" unsigned int, "i" signed int, "bits" alarm/status bit set,
#             "series" array of unsigned ints (hourly profile)
#   unit      unit of the scaled reading ("" for bit sets)
#   mul, div  scaling: reading = raw * mul / div   (default 1, 1)
#   min, max  allowed raw range (inclusive); for a series, per element
#   len       (min, max) number of elements of a series
#   bits      names of bits 0, 1, 2, ... of a bit set; other bits are invalid
#   optional  may be left off the end of the array
#   nullable  may be CBOR null

from protocol.errors import (
    FRAME_KIND,
    PAYLOAD_MISSING,
    PAYLOAD_RANGE,
    PAYLOAD_SHAPE,
    PAYLOAD_TYPE,
    PAYLOAD_UNKNOWN,
    FrameError,
)

WATER_ALARMS = ("leak", "burst", "backflow", "tamper", "dry", "low_battery")
AIR_STATUS = ("pm_fault", "pm_bad_frames", "climate_fault", "no2_fault", "warmup")

KINDS = {
    1: {
        "name": "water_meter",
        "fields": (
            # Meter index: total volume through the meter since installation.
            {"name": "index", "type": "u", "unit": "L", "min": 0, "max": 0xFFFFFFFF},
            # Unix hour (seconds // 3600) of the END of the last profile slot,
            # modulo 256; the receiver resolves it against its own clock.
            {"name": "profile_end_h", "type": "u", "unit": "h", "min": 0, "max": 255},
            {"name": "alarms", "type": "bits", "unit": "", "bits": WATER_ALARMS},
            # Battery in 5 % steps (0..20), the resolution meter displays give.
            {"name": "battery", "type": "u", "unit": "%", "mul": 5, "min": 0, "max": 20},
            # Litres per hour slot, oldest first, the last slot ending at profile_end_h.
            {"name": "profile", "type": "series", "unit": "L", "min": 0, "max": 0xFFFFFF,
             "len": (1, 24)},
            # Highest flow seen since the last frame; sent when an alarm is active.
            {"name": "max_flow", "type": "u", "unit": "L/h", "min": 0, "max": 0xFFFFFF,
             "optional": True},
        ),
    },
    2: {
        "name": "air_quality",
        "fields": (
            {"name": "pm1", "type": "u", "unit": "µg/m³", "div": 10, "min": 0, "max": 20000,
             "nullable": True},
            {"name": "pm2_5", "type": "u", "unit": "µg/m³", "div": 10, "min": 0, "max": 20000,
             "nullable": True},
            {"name": "pm10", "type": "u", "unit": "µg/m³", "div": 10, "min": 0, "max": 20000,
             "nullable": True},
            # BME280 operating range -40..85 °C, 0..100 %RH, 300..1100 hPa.
            {"name": "temperature", "type": "i", "unit": "°C", "div": 10, "min": -400,
             "max": 850, "nullable": True},
            {"name": "humidity", "type": "u", "unit": "%", "min": 0, "max": 100,
             "nullable": True},
            {"name": "pressure", "type": "u", "unit": "hPa", "div": 10, "min": 3000,
             "max": 11000, "nullable": True},
            {"name": "status", "type": "bits", "unit": "", "bits": AIR_STATUS},
            {"name": "no2", "type": "u", "unit": "µg/m³", "min": 0, "max": 2000,
             "optional": True, "nullable": True},
        ),
    },
}

KIND_IDS = {}
for _kid in KINDS:
    KIND_IDS[KINDS[_kid]["name"]] = _kid


def kind_id(name):
    """The numeric id of a kind name; FrameError(frame_kind) if there is none."""
    kid = KIND_IDS.get(name)
    if kid is None:
        raise FrameError(FRAME_KIND, name)
    return kid


def kind_by_id(kid):
    """The table entry of kind `kid`; FrameError(frame_kind) if there is none."""
    kind = KINDS.get(kid)
    if kind is None:
        raise FrameError(FRAME_KIND, str(kid))
    return kind


def _bits_max(field):
    return (1 << len(field["bits"])) - 1


def _check(field, value):
    # Raises FrameError unless `value` is a valid raw value of `field`.
    if value is None:
        if not field.get("nullable"):
            raise FrameError(PAYLOAD_TYPE, field["name"] + " is null")
        return
    ftype = field["type"]
    if ftype == "series":
        if not isinstance(value, list):
            raise FrameError(PAYLOAD_TYPE, field["name"])
        lo, hi = field["len"]
        if len(value) < lo or len(value) > hi:
            raise FrameError(PAYLOAD_RANGE, field["name"] + " length")
        for item in value:
            if not isinstance(item, int) or isinstance(item, bool):
                raise FrameError(PAYLOAD_TYPE, field["name"])
            if item < field["min"] or item > field["max"]:
                raise FrameError(PAYLOAD_RANGE, field["name"])
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(PAYLOAD_TYPE, field["name"])
    if ftype == "bits":
        if value < 0 or value > _bits_max(field):
            raise FrameError(PAYLOAD_RANGE, field["name"])
    elif value < field["min"] or value > field["max"]:
        raise FrameError(PAYLOAD_RANGE, field["name"])


def pack(kind, values):
    """The CBOR array for a dict of raw field values (name -> int/list/None)."""
    fields = kind["fields"]
    names = {}
    for field in fields:
        names[field["name"]] = True
    for name in values:
        if name not in names:
            raise FrameError(PAYLOAD_UNKNOWN, name)
    # Trailing optional fields that are absent are left off the array.
    last = len(fields)
    while last > 0 and fields[last - 1].get("optional") and fields[last - 1]["name"] not in values:
        last -= 1
    out = []
    for pos in range(last):
        field = fields[pos]
        name = field["name"]
        if name in values:
            value = values[name]
        elif field["type"] == "bits":
            value = 0
        elif field.get("nullable") or field.get("optional"):
            value = None
        else:
            raise FrameError(PAYLOAD_MISSING, name)
        if value is None and not field.get("nullable"):
            raise FrameError(PAYLOAD_MISSING, name)
        _check(field, value)
        out.append(value)
    return out


_INT = 0        # plan codes: a plain integer field,
_NULLABLE = 1   # an integer field that may be null,
_SERIES = 2     # an array of integers


def _plan(kind):
    # Per field: (name, code, lowest, highest, field), precomputed once per kind
    # so that unpack() checks a payload without dictionary look-ups.
    plan = kind.get("_plan")
    if plan is None:
        plan = []
        required = 0
        for field in kind["fields"]:
            if field["type"] == "bits":
                lo, hi = 0, _bits_max(field)
            else:
                lo, hi = field["min"], field["max"]
            if field["type"] == "series":
                code = _SERIES
            elif field.get("nullable"):
                code = _NULLABLE
            else:
                code = _INT
            plan.append((field["name"], code, lo, hi, field))
            if not field.get("optional"):
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
                _check(field, value)  # raises with the precise reason
            for item in value:
                if item.__class__ is not int or item < lo or item > hi:
                    _check(field, value)
            if len(value) < field["len"][0] or len(value) > field["len"][1]:
                _check(field, value)
        elif value.__class__ is not int or value < lo or value > hi:  # noqa: SIM102
            # (nested, not and-ed: the common in-range case tests one condition)
            if value is not None or code != _NULLABLE:
                _check(field, value)
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
