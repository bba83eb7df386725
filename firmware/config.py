# config.json: loaded once at boot, checked completely, defaults filled in.
#
# Anything wrong raises ConfigError with one line that names the key, and the
# app goes into safe mode with that line on the console. docs/firmware.md lists
# every key; the tables below are the single source of defaults.

import json

ROLES = ("water_meter", "air_quality", "radio_bridge", "display")
ROLE_KINDS = {"water_meter": "water_meter", "air_quality": "air_quality"}
LINK_TYPES = ("uart", "lora", "none")
SLEEP_MODES = ("light", "idle", "none", "deep")

# Section defaults. A key absent from config.json takes the value here.
TOP_DEFAULTS = {
    "tag_len": 4,
    "board": "unix",
    "jitter_s": 20,         # random delay before each send, 0..jitter_s seconds
    "fcnt_block": 16,       # frame counters reserved per flash write
    # Seconds after each send interval's start at which a water meter sends.
    # None: drawn at boot over the whole interval on a LoRa link (meters whose
    # power returns together do not send in step), 0 on a wired link.
    "send_phase_s": None,
}
LINK_DEFAULTS = {
    "uart": "link",         # UART name in the board's pin map (bench: a pty path)
    "baud": 115200,
    "log": False,           # copy console lines as LOG records onto the UART link
}
RADIO_DEFAULTS = {
    # LoRa settings: the transmitter when link.type is "lora", the receiver of a
    # radio_bridge. EU868 sub-band rules apply (firmware.dutycycle).
    "chip": None,           # None = the board's radio; "sx1262" | "sx1276" to override
    "freq_hz": 868100000,
    "sf": 9,
    "bw_hz": 125000,
    "cr": 5,                # coding rate 4/5
    "preamble": 8,
    "power_dbm": 14,
    "syncword": 0x12,       # private network sync word
    # Uplink channels (Hz): each frame goes out on one of them, drawn at random
    # among those whose sub-band has duty-cycle room. None = EU868_CHANNELS, or
    # [freq_hz] when the section sets freq_hz alone (a node pinned to a channel).
    "channels": None,
}
# The eight 125 kHz channels an SX1301/SX1302 concentrator listens on in EU868
# practice: 867.1-867.9 MHz (sub-band h1.4) and 868.1-868.5 MHz (g1), 1 % each.
EU868_CHANNELS = (867100000, 867300000, 867500000, 867700000, 867900000,
                  868100000, 868300000, 868500000)
POWER_DEFAULTS = {
    "sleep": "light",       # light | idle | none | deep
    "wdt_s": 60,            # hardware watchdog timeout, 0 = off
    "brownout_mv": 0,       # boot waits while the battery reads below this (0 = off)
    "boot_loop_limit": 5,   # resets without one completed send before safe mode
}
WATER_DEFAULTS = {
    "litres_per_pulse": 1,
    "debounce_ms": 20,
    "sends_per_day": 4,
    "send_offset_h": 0,     # first send hour of the day (UTC)
    "profile_len": 6,       # hourly values per frame; 12 with 4 sends/day = overlap
    "flow_window_s": 60,    # flow is measured over windows this long
    "burst_lph": 2000,      # flow above this raises "burst"
    "leak_hours": 24,       # hours without a zero-flow hour that raise "leak"
    "dry_days": 14,         # days without consumption that raise "dry"
    "backflow_l": 2,        # reverse litres since the last frame that raise "backflow"
    "low_battery_mv": 3300,
    "battery_empty_mv": 3000,
    "battery_full_mv": 3600,
    "persist_pulses": 0,    # also persist the index every N pulses (0 = hourly only)
    "pulse": "pulse",       # input names in the board's pin map; None when not fitted
    "direction": None,
    "tamper": None,
    "tamper_active": 1,
    "battery": None,
}
AIR_DEFAULTS = {
    "pm_sensor": "sds011",     # sds011 | pms5003 | none
    "pm_uart": "pm",           # UART name in the board's pin map (bench: bench.uart.<name>)
    "pms_mode": "active",      # PMS5003 report mode: active | passive
    "pms_cf1": False,          # PMS5003: CF=1 values instead of atmospheric ones
    "interval_s": 600,         # one frame this often
    "warmup_s": 30,            # particle frames discarded after the fan starts
    "sample_s": 30,            # particle frames averaged after the warm-up
    "climate": "bme280",       # bme280 | none
    "i2c": "i2c0",             # I2C bus name in the board's pin map (bench: bench.i2c.<name>)
    "bme280_addr": 0x76,       # 0x76 (SDO to GND) or 0x77 (SDO to VDDIO)
    "climate_every_s": 60,     # BME280 forced measurement this often
    "bad_frames_max": 2,       # more bad particle frames per interval set pm_bad_frames
}
BRIDGE_DEFAULTS = {
    "radio": "radio",
    "check_header": True,   # drop packets that are not knute frames
    "stats_s": 3600,        # console/LOG statistics line interval
}

VALID_SPD = (1, 2, 3, 4, 6, 8, 12, 24)


class ConfigError(ValueError):
    """config.json is missing, unreadable or wrong; the message says which key."""


def _merge(section, defaults, name):
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise ConfigError(name + " must be an object")
    out = {}
    for key in defaults:
        out[key] = defaults[key]
    for key in section:
        out[key] = section[key]
    return out


def _int(section, key, lo, hi, name):
    value = section.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or value < lo or value > hi:
        raise ConfigError("%s.%s must be an integer %d..%d" % (name, key, lo, hi))
    return value


def _number(section, key, lo, hi, name):
    value = section.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < lo or value > hi:
        raise ConfigError("%s.%s must be a number %s..%s" % (name, key, lo, hi))
    return value


def parse_key(text):
    """The 16 key bytes of a 32-digit hex string; ConfigError otherwise."""
    if not isinstance(text, str) or len(text) != 32:
        raise ConfigError("key must be 32 hex digits")
    try:
        return bytes.fromhex(text)
    except ValueError:
        raise ConfigError("key must be 32 hex digits") from None


def _choice(section, key, allowed, name):
    if section[key] not in allowed:
        raise ConfigError("%s.%s must be one of %s" % (name, key, ", ".join(allowed)))


def air_section(section):
    """The "air" section with defaults filled in; ConfigError names a bad or unknown key."""
    if section is not None and not isinstance(section, dict):
        raise ConfigError("air must be an object")
    for key in section or ():
        if key not in AIR_DEFAULTS:
            raise ConfigError("air.%s is not a known key" % key)
    out = _merge(section, AIR_DEFAULTS, "air")
    _choice(out, "pm_sensor", ("sds011", "pms5003", "none"), "air")
    _choice(out, "pms_mode", ("active", "passive"), "air")
    _choice(out, "climate", ("bme280", "none"), "air")
    _int(out, "interval_s", 10, 86400, "air")
    _int(out, "warmup_s", 0, 600, "air")
    _int(out, "sample_s", 1, 3600, "air")
    _int(out, "climate_every_s", 1, 3600, "air")
    _int(out, "bad_frames_max", 0, 100000, "air")
    if out["bme280_addr"] not in (0x76, 0x77):
        raise ConfigError("air.bme280_addr must be 0x76 (118) or 0x77 (119)")
    if not isinstance(out["pms_cf1"], bool):
        raise ConfigError("air.pms_cf1 must be true or false")
    for key in ("pm_uart", "i2c"):
        if not isinstance(out[key], str):
            raise ConfigError("air.%s must be a name" % key)
    return out


def _channels(radio, given):
    """Fill in and check radio.channels (the sub-band check is firmware.boot's)."""
    chans = radio["channels"]
    if chans is None:
        chans = [radio["freq_hz"]] if "freq_hz" in given else EU868_CHANNELS
    if not isinstance(chans, (list, tuple)) or not 1 <= len(chans) <= 16:
        raise ConfigError("radio.channels must be a list of 1..16 channel frequencies (Hz)")
    for i, freq in enumerate(chans):
        if (not isinstance(freq, int) or isinstance(freq, bool) or freq < 137000000
                or freq > 1020000000):
            raise ConfigError("radio.channels[%d] must be an integer 137000000..1020000000" % i)
        if freq in chans[:i]:
            raise ConfigError("radio.channels[%d] repeats %d" % (i, freq))
    radio["channels"] = chans
    if "freq_hz" not in given:
        radio["freq_hz"] = chans[0]


def validate(cfg):
    """Check a parsed config.json, fill in defaults and return the completed dict."""
    if not isinstance(cfg, dict):
        raise ConfigError("config.json must hold a JSON object")
    role = cfg.get("role")
    if role not in ROLES:
        raise ConfigError("role must be one of " + ", ".join(ROLES))
    out = {}
    for key in TOP_DEFAULTS:
        out[key] = TOP_DEFAULTS[key]
    for key in cfg:
        out[key] = cfg[key]
    out["device_id"] = _int(out, "device_id", 0, 0xFFFFFFFF, "config")
    if role in ("radio_bridge", "display") and out.get("key") is None:
        out["key_bytes"] = None
    else:
        out["key_bytes"] = parse_key(out.get("key"))
    if out.get("key_next"):
        # A key rotation is pending (docs/protocol.md 12.9): uplinks use the next key.
        out["key_next_bytes"] = parse_key(out["key_next"])
    kind = out.get("kind", ROLE_KINDS.get(role))
    out["kind"] = kind
    if role in ROLE_KINDS and kind != ROLE_KINDS[role]:
        # A role builds its own kind's fields; a new sensor kind comes with its role.
        raise ConfigError("kind must be %s for role %s" % (ROLE_KINDS[role], role))
    if out["tag_len"] not in (4, 8):
        raise ConfigError("tag_len must be 4 or 8")
    _number(out, "jitter_s", 0, 3600, "config")
    _int(out, "fcnt_block", 1, 4096, "config")
    if not isinstance(out["board"], str):
        raise ConfigError("board must be a board name")

    link = _merge(cfg.get("link"), LINK_DEFAULTS, "link")
    if "type" not in link:
        # A display takes its index over Wi-Fi: no uplink of its own.
        link["type"] = "none" if role == "display" else "uart"
    if link["type"] not in LINK_TYPES:
        raise ConfigError("link.type must be uart, lora or none")
    if link["type"] == "none" and role != "display":
        raise ConfigError("link.type none is for the display role only")
    _int(link, "baud", 300, 4000000, "link")
    out["link"] = link

    radio = _merge(cfg.get("radio"), RADIO_DEFAULTS, "radio")
    _channels(radio, cfg.get("radio") or {})
    _int(radio, "freq_hz", 137000000, 1020000000, "radio")
    _int(radio, "sf", 6, 12, "radio")
    if radio["bw_hz"] not in (125000, 250000, 500000):
        raise ConfigError("radio.bw_hz must be 125000, 250000 or 500000")
    _int(radio, "cr", 5, 8, "radio")
    _int(radio, "preamble", 6, 65535, "radio")
    _int(radio, "power_dbm", -9, 22, "radio")
    _int(radio, "syncword", 0, 0xFFFF, "radio")
    if radio["chip"] not in (None, "sx1262", "sx1261", "sx1276", "sx1278"):
        raise ConfigError("radio.chip must be sx1262, sx1261, sx1276 or sx1278")
    if link["type"] == "lora" or role == "radio_bridge":
        # The EU868 sub-band check (protocol.airtime) is done by firmware.boot,
        # once this module has left the heap.
        out["radio"] = radio    # uart nodes have no radio: nothing to keep in RAM

    power = _merge(cfg.get("power"), POWER_DEFAULTS, "power")
    if role == "display" and "sleep" not in (cfg.get("power") or {}):
        power["sleep"] = "idle"     # mains-powered; light sleep would drop the Wi-Fi link
    if power["sleep"] not in SLEEP_MODES:
        raise ConfigError("power.sleep must be light, idle, none or deep")
    _int(power, "wdt_s", 0, 3600, "power")
    _int(power, "brownout_mv", 0, 10000, "power")
    _int(power, "boot_loop_limit", 1, 1000, "power")
    out["power"] = power

    if role == "water_meter":
        water = _merge(cfg.get("water"), WATER_DEFAULTS, "water")
        _number(water, "litres_per_pulse", 0.001, 10000, "water")
        _int(water, "debounce_ms", 0, 10000, "water")
        spd = water.get("sends_per_day")
        if spd not in VALID_SPD:
            raise ConfigError("water.sends_per_day must divide 24 (1, 2, 3, 4, 6, 8, 12, 24)")
        _int(water, "send_offset_h", 0, 23, "water")
        if out["send_phase_s"] is not None:
            _int(out, "send_phase_s", 0, 24 // spd * 3600 - 1, "config")
        _int(water, "profile_len", 1, 24, "water")
        if water["profile_len"] < 24 // spd:
            raise ConfigError("water.profile_len must be at least 24 / sends_per_day = %d"
                              % (24 // spd))
        _int(water, "flow_window_s", 10, 3600, "water")
        _int(water, "burst_lph", 1, 0xFFFFFF, "water")
        _int(water, "leak_hours", 1, 24, "water")
        _int(water, "dry_days", 1, 365, "water")
        _int(water, "backflow_l", 1, 100000, "water")
        _int(water, "low_battery_mv", 0, 10000, "water")
        _int(water, "battery_empty_mv", 0, 10000, "water")
        _int(water, "battery_full_mv", water["battery_empty_mv"] + 1, 10000, "water")
        _int(water, "persist_pulses", 0, 1000000, "water")
        _int(water, "tamper_active", 0, 1, "water")
        if power["sleep"] == "deep":
            # The RAM is lost at each deep sleep: every take of the ULP's
            # counters is saved before the next sleep (firmware/ulp_counter.py).
            water["persist_pulses"] = 1
        out["water"] = water
    elif role == "air_quality":
        out["air"] = air_section(cfg.get("air"))
    elif role == "display":
        # Its own module: the display's key names would otherwise become qstrs,
        # interned for good, on every node (firmware.config is loaded at boot).
        from firmware import config_display

        out["display"] = config_display.display_section(cfg.get("display"))
    elif role == "radio_bridge":
        bridge = _merge(cfg.get("bridge"), BRIDGE_DEFAULTS, "bridge")
        _int(bridge, "stats_s", 10, 86400, "bridge")
        out["bridge"] = bridge
        if link["type"] != "uart":
            raise ConfigError("radio_bridge needs link.type uart (the gateway's USB serial)")

    # Downlinks (docs/protocol.md section 12): on by default for the roles that
    # send uplinks of their own, as every supported board's heap holds the path
    # (docs/firmware.md, "The boards' heap"); false turns them off.
    if "downlink" not in out:
        out["downlink"] = role in ROLE_KINDS
    if not isinstance(out["downlink"], bool):
        raise ConfigError("downlink must be true or false")
    bench = cfg.get("bench")
    if bench is not None and not isinstance(bench, dict):
        raise ConfigError("bench must be an object")
    out["bench"] = bench or {}
    return out


def load(path="config.json"):
    """The validated config from `path`; ConfigError with the reason otherwise."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError:
        raise ConfigError("no " + path + " on the flash (provision the node)") from None
    try:
        cfg = json.loads(text)
    except ValueError:
        raise ConfigError(path + " is not valid JSON (corrupt or half-written)") from None
    return validate(cfg)
