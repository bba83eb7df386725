# The sensor kinds table: the one place that says what a frame of each kind
# carries. A payload is a CBOR array whose elements are the kind's fields in
# the order listed here. Trailing optional fields may be left off; a nullable
# field may be CBOR null when its sensor has no valid value.
#
# Values travel as scaled integers: the reading is raw * mul / div in `unit`.
# Adding a sensor kind means adding one entry to TABLE, nothing else: encoder,
# decoder, gateway JSON, docs tables and tests all read this table.
#
# TABLE is kept compact because every node holds it: one tuple per kind,
# (id, name, fields), and one tuple per field,
#   (name, type, unit, mul, div, min, max, extra, flags)
# where extra is a series' len or a bit set's bits (None otherwise), flags is
# OPTIONAL | NULLABLE, and min and max are None for a bit set. KINDS and
# KIND_IDS, the dict views the gateway and the tools read (KINDS[id] =
# {"name", "fields": ({key: value}, ...)}), are built from it on first use by
# protocol.kinds_decode, which a node that only encodes never loads. Field keys:
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

try:
    from micropython import const
except ImportError:  # CPython: const(x) is x
    def const(x):
        return x

from .errors import (
    FRAME_KIND,
    PAYLOAD_MISSING,
    PAYLOAD_RANGE,
    PAYLOAD_TYPE,
    PAYLOAD_UNKNOWN,
    FrameError,
)

WATER_ALARMS = ("leak", "burst", "backflow", "tamper", "dry", "low_battery")
AIR_STATUS = ("pm_fault", "pm_bad_frames", "climate_fault", "no2_fault", "warmup")

OPTIONAL = 1
NULLABLE = 2

# The downlink report (docs/protocol.md section 12.7), the last field of every
# kind: [flags, entry, ...], 1 + 8 values. protocol.downlink offers it as
# downlink.REPORT_FIELD; a new kind ends with it too.
REPORT_FIELD = ("dl", "series", "", 1, 1, 0, 0xFFFFFF, (1, 9), OPTIONAL)

TABLE = (
    (1, "water_meter", (
        # Meter index: total volume through the meter since installation.
        ("index", "u", "L", 1, 1, 0, 0xFFFFFFFF, None, 0),
        # Unix hour (seconds // 3600) of the END of the last profile slot,
        # modulo 256; the receiver resolves it against its own clock.
        ("profile_end_h", "u", "h", 1, 1, 0, 255, None, 0),
        ("alarms", "bits", "", 1, 1, None, None, WATER_ALARMS, 0),
        # Battery in 5 % steps (0..20), the resolution meter displays give.
        ("battery", "u", "%", 5, 1, 0, 20, None, 0),
        # Litres per hour slot, oldest first, the last slot ending at profile_end_h.
        ("profile", "series", "L", 1, 1, 0, 0xFFFFFF, (1, 24), 0),
        # Highest flow seen since the last frame; sent when an alarm is active
        # (null when a downlink report follows without it).
        ("max_flow", "u", "L/h", 1, 1, 0, 0xFFFFFF, None, OPTIONAL | NULLABLE),
        REPORT_FIELD,
    )),
    (2, "air_quality", (
        ("pm1", "u", "µg/m³", 1, 10, 0, 20000, None, NULLABLE),
        ("pm2_5", "u", "µg/m³", 1, 10, 0, 20000, None, NULLABLE),
        ("pm10", "u", "µg/m³", 1, 10, 0, 20000, None, NULLABLE),
        # BME280 operating range -40..85 °C, 0..100 %RH, 300..1100 hPa.
        ("temperature", "i", "°C", 1, 10, -400, 850, None, NULLABLE),
        ("humidity", "u", "%", 1, 1, 0, 100, None, NULLABLE),
        ("pressure", "u", "hPa", 1, 10, 3000, 11000, None, NULLABLE),
        ("status", "bits", "", 1, 1, None, None, AIR_STATUS, 0),
        ("no2", "u", "µg/m³", 1, 1, 0, 2000, None, OPTIONAL | NULLABLE),
        REPORT_FIELD,
    )),
)

# Positions in a TABLE field tuple
_NAME = const(0)
_TYPE = const(1)
_MIN = const(5)
_MAX = const(6)
_EXTRA = const(7)
_FLAGS = const(8)


def __getattr__(name):
    # KINDS and KIND_IDS (dict views of TABLE), unpack(), readings() and the
    # other receiver helpers live in protocol.kinds_decode, imported on first use.
    from . import kinds_decode

    value = getattr(kinds_decode, name)
    globals()[name] = value
    return value


def table_entry(kid):
    """The TABLE row (id, name, fields) of kind `kid`; FrameError(frame_kind) if there is none."""
    for entry in TABLE:
        if entry[0] == kid:
            return entry
    raise FrameError(FRAME_KIND, str(kid))


def kind_id(name):
    """The numeric id of a kind name; FrameError(frame_kind) if there is none."""
    for entry in TABLE:
        if entry[1] == name:
            return entry[0]
    raise FrameError(FRAME_KIND, name)


def kind_by_id(kid):
    """The KINDS entry of kind `kid`; FrameError(frame_kind) if there is none."""
    table_entry(kid)
    from . import kinds_decode

    return kinds_decode.KINDS[kid]


def field_range(field):
    """(lowest, highest) raw value of a TABLE field (per element for a series)."""
    if field[_TYPE] == "bits":
        return 0, (1 << len(field[_EXTRA])) - 1
    return field[_MIN], field[_MAX]


def check(field, value):
    """Raise FrameError unless `value` is a valid raw value of the TABLE field `field`."""
    name = field[_NAME]
    if value is None:
        if not field[_FLAGS] & NULLABLE:
            raise FrameError(PAYLOAD_TYPE, name + " is null")
        return
    lo, hi = field_range(field)
    if field[_TYPE] == "series":
        if not isinstance(value, list):
            raise FrameError(PAYLOAD_TYPE, name)
        if len(value) < field[_EXTRA][0] or len(value) > field[_EXTRA][1]:
            raise FrameError(PAYLOAD_RANGE, name + " length")
        for item in value:
            if not isinstance(item, int) or isinstance(item, bool):
                raise FrameError(PAYLOAD_TYPE, name)
            if item < lo or item > hi:
                raise FrameError(PAYLOAD_RANGE, name)
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise FrameError(PAYLOAD_TYPE, name)
    if value < lo or value > hi:
        raise FrameError(PAYLOAD_RANGE, name)


def pack_id(kid, values):
    """The CBOR array for a dict of raw field values (name -> int/list/None) of kind `kid`."""
    fields = table_entry(kid)[2]
    for name in values:
        for field in fields:
            if field[_NAME] == name:
                break
        else:
            raise FrameError(PAYLOAD_UNKNOWN, name)
    # Trailing optional fields that are absent are left off the array.
    last = len(fields)
    while last > 0 and fields[last - 1][_FLAGS] & OPTIONAL:
        if fields[last - 1][_NAME] in values:
            break
        last -= 1
    out = []
    for pos in range(last):
        field = fields[pos]
        name = field[_NAME]
        if name in values:
            value = values[name]
        elif field[_TYPE] == "bits":
            value = 0
        elif field[_FLAGS]:         # nullable or optional: null
            value = None
        else:
            raise FrameError(PAYLOAD_MISSING, name)
        if value is None and not field[_FLAGS] & NULLABLE:
            raise FrameError(PAYLOAD_MISSING, name)
        check(field, value)
        out.append(value)
    return out


def pack(kind, values):
    """The CBOR array for a dict of raw field values of a KINDS entry `kind`."""
    return pack_id(kind_id(kind["name"]), values)
