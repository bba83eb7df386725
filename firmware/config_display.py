# config.json's "display" section (firmware.roles.display), checked at boot.
#
# Apart from firmware.config so that only a display node loads it: every name
# in a loaded module becomes a qstr, interned for good, and the other roles
# boot with little heap to spare (docs/firmware.md, "Memory").

from firmware.config import ConfigError, _choice, _int, _merge

# The display role's palettes, level 1 (best) first. Default: the Okabe-Ito
# colour-universal-design set (M. Okabe, K. Ito, "Color Universal Design (CUD):
# how to make figures and presentations that are friendly to colorblind people",
# 2008, jfly.uni-koeln.de/color), ordered along its blue-yellow axis, which the
# common red-green deficiencies keep: blue, sky blue, yellow, orange,
# vermillion, reddish purple. The Norwegian scale's four classes take blue,
# yellow, vermillion and reddish purple from the same set.
DISPLAY_PALETTES = {
    "eaqi": ("#0072b2", "#56b4e9", "#f0e442", "#e69f00", "#d55e00", "#cc79a7"),
    "no": ("#0072b2", "#f0e442", "#d55e00", "#cc79a7"),
}
DISPLAY_DEFAULTS = {
    "source": "mqtt",         # mqtt (Wi-Fi); LoRa downlinks are not supported yet
    "area": None,             # the area whose index is shown (required)
    "prefix": "knute",        # the backend's MQTT topic prefix
    "topic": None,            # None = <prefix>/air/index/area/<area>
    "scale": "eaqi",          # eaqi (levels 1-6) | no (Norway's classes, levels 1-4)
    "palette": None,          # None = DISPLAY_PALETTES[scale]; else one #rrggbb per level
    "strip": "strip",         # pin-map name of the strip's data pin (bench: bench.strip.<name>)
    "pixels": 30,
    "brightness": 100,        # percent, by day
    "transition_s": 20,       # cross-fade length of every change
    "stale_s": 7200,          # no index message for this long: the stale pattern
    "night": {"start": "22:00", "end": "06:00", "brightness": 25},   # null = no dimming
    "utc_offset_min": 60,     # local time for the night schedule (CET; no DST rule)
    "frame_ms": 50,           # frame period while colours move
    "mqtt": None,             # see DISPLAY_MQTT_DEFAULTS
    "wifi": None,             # {"ssid": ..., "password": ...} on boards; null on the bench
}
DISPLAY_MQTT_DEFAULTS = {
    "host": None,             # required
    "port": 1883,
    "client_id": None,        # None = knute-display-<device id>
    "user": None,
    "password": None,
    "keepalive_s": 60,
    "max_packet": 2048,       # longer index messages are skipped (and counted)
}

def _known(section, defaults, name):
    if section is not None and not isinstance(section, dict):
        raise ConfigError(name + " must be an object")
    for key in section or ():
        if key not in defaults:
            raise ConfigError("%s.%s is not a known key" % (name, key))
    return _merge(section, defaults, name)


def _hhmm(section, key, name):
    text = section.get(key)
    ok = isinstance(text, str) and len(text) == 5 and text[2] == ":"
    if ok:
        try:
            ok = 0 <= int(text[:2]) <= 23 and 0 <= int(text[3:]) <= 59
        except ValueError:
            ok = False
    if not ok:
        raise ConfigError("%s.%s must be a time of day HH:MM" % (name, key))


def _name(section, key, name, required=True):
    value = section.get(key)
    if value is None and not required:
        return
    if not isinstance(value, str) or not value or "/" in value or "+" in value or "#" in value:
        raise ConfigError("%s.%s must be a name (no /, + or #)" % (name, key))


def display_section(section):
    """The "display" section with defaults filled in; ConfigError names a bad or unknown key."""
    out = _known(section, DISPLAY_DEFAULTS, "display")
    if out["source"] != "mqtt":
        raise ConfigError("display.source must be mqtt (LoRa downlinks are not supported yet)")
    _name(out, "area", "display")
    _name(out, "prefix", "display")
    _choice(out, "scale", ("eaqi", "no"), "display")
    if out["topic"] is None:
        out["topic"] = "%s/air/index/area/%s" % (out["prefix"], out["area"])
    elif not isinstance(out["topic"], str) or not out["topic"]:
        raise ConfigError("display.topic must be an MQTT topic filter")
    levels = len(DISPLAY_PALETTES[out["scale"]])
    if out["palette"] is None:
        out["palette"] = list(DISPLAY_PALETTES[out["scale"]])
    palette = out["palette"]
    if not isinstance(palette, list) or len(palette) != levels:
        raise ConfigError("display.palette must be a list of %d colours #rrggbb (scale %s)"
                          % (levels, out["scale"]))
    for i, colour in enumerate(palette):
        ok = isinstance(colour, str) and len(colour) == 7 and colour[0] == "#"
        if ok:
            try:
                int(colour[1:], 16)
            except ValueError:
                ok = False
        if not ok:
            raise ConfigError("display.palette[%d] must be a colour #rrggbb" % i)
        palette[i] = colour.lower()
    _name(out, "strip", "display")
    _int(out, "pixels", 1, 1000, "display")
    _int(out, "brightness", 1, 100, "display")
    _int(out, "transition_s", 0, 3600, "display")
    _int(out, "stale_s", 60, 7 * 86400, "display")
    _int(out, "utc_offset_min", -720, 840, "display")
    _int(out, "frame_ms", 10, 1000, "display")
    if out["night"] is not None:
        night = _known(out["night"], {"start": "22:00", "end": "06:00", "brightness": 25},
                       "display.night")
        _hhmm(night, "start", "display.night")
        _hhmm(night, "end", "display.night")
        _int(night, "brightness", 0, 100, "display.night")
        out["night"] = night
    mqtt = _known(out["mqtt"], DISPLAY_MQTT_DEFAULTS, "display.mqtt")
    if not isinstance(mqtt["host"], str) or not mqtt["host"]:
        raise ConfigError("display.mqtt.host must be the broker's host name or address")
    _int(mqtt, "port", 1, 65535, "display.mqtt")
    _int(mqtt, "keepalive_s", 10, 65535, "display.mqtt")
    _int(mqtt, "max_packet", 256, 65536, "display.mqtt")
    for key in ("client_id", "user", "password"):
        if mqtt[key] is not None and not isinstance(mqtt[key], str):
            raise ConfigError("display.mqtt.%s must be a string" % key)
    out["mqtt"] = mqtt
    if out["wifi"] is not None:
        wifi = _known(out["wifi"], {"ssid": None, "password": ""}, "display.wifi")
        if not isinstance(wifi["ssid"], str) or not wifi["ssid"]:
            raise ConfigError("display.wifi.ssid must be the network's name")
        if not isinstance(wifi["password"], str):
            raise ConfigError("display.wifi.password must be a string")
        out["wifi"] = wifi
    return out
