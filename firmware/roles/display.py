# The display node: drives the light sculpture's LED strip (WS2812 through
# MicroPython's neopixel) with the air-quality index of one area.
#
# Input: the area index `knute backend` publishes retained on
# <prefix>/air/index/area/<area> (docs/schema/air_index.schema.json), over
# MQTT on Wi-Fi (firmware.drivers.mqttsub). The retained message arrives at
# every (re)connection, so a node that boots or loses the broker gets the
# latest index at once.
#
# Output, recomputed every frame_ms:
#   fresh index   the palette's colour for its level (palette[level - 1]);
#   stale         a calm pattern: neutral white breathing slowly between dim
#                 and half brightness (no palette colour is a grey, so it can
#                 never read as "good"). Stale means: no index yet, withheld
#                 (level null), past the payload's valid_until (when the
#                 node's clock is set), or no new index (updated_at) for
#                 stale_s: the retained copy redelivered at a reconnection
#                 does not count as new.
#   night         everything scaled by night.brightness (percent) between
#                 night.start and night.end, local time = UTC + utc_offset_min.
# Every change of what is shown (a new level, fresh <-> stale, day <-> night)
# is a linear cross-fade over transition_s from the colour on the strip, so
# the sculpture never jumps.

try:
    from micropython import const
except ImportError:  # CPython (tests, type checks): const(x) is x
    def const(x):
        return x

import json

from firmware.drivers import mqttsub

_STALE = const(0)               # "level" of the stale pattern
_STEADY_MS = const(1000)        # longest wait between frames when nothing moves
_CLOCK_SET_S = const(1600000000)  # an RTC below this has not been set (no NTP yet)
_BREATH_MS = const(10000)       # one slow breath of the stale pattern
_STALE_LOW = const(10)          # its brightness range, percent of full white
_STALE_HIGH = const(50)


def parse_colour(text):
    """(r, g, b) of '#rrggbb'; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 7 or text[0] != "#":
        raise ValueError("not a #rrggbb colour")
    value = int(text[1:], 16)
    return ((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)


def colour_hex(rgb):
    """'#rrggbb' of (r, g, b)."""
    return "#%02x%02x%02x" % (rgb[0], rgb[1], rgb[2])


def _days_from_civil(y, m, d):
    # Days since 1970-01-01 of a proleptic Gregorian date: H. Hinnant,
    # "chrono-Compatible Low-Level Date Algorithms", days_from_civil.
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + (-3 if m > 2 else 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_utc(text):
    """Unix seconds of 'YYYY-MM-DDTHH:MM:SS[.f]Z'; ValueError otherwise."""
    if not isinstance(text, str) or len(text) < 20 or text[-1] != "Z" or text[10] != "T":
        raise ValueError("not a UTC time")
    days = _days_from_civil(int(text[0:4]), int(text[5:7]), int(text[8:10]))
    return days * 86400 + int(text[11:13]) * 3600 + int(text[14:16]) * 60 + int(text[17:19])


def minute_of_day(text):
    """Minutes since midnight of 'HH:MM'; ValueError otherwise."""
    if not isinstance(text, str) or len(text) != 5 or text[2] != ":":
        raise ValueError("not HH:MM")
    hours = int(text[0:2])
    minutes = int(text[3:5])
    if not (0 <= hours <= 23 and 0 <= minutes <= 59):
        raise ValueError("not HH:MM")
    return hours * 60 + minutes


def in_window(minute, start, end):
    """True when minute-of-day `minute` is in [start, end), the window may wrap midnight."""
    if start <= end:
        return start <= minute < end
    return minute >= start or minute < end


def blend(a, b, num, den):
    """The colour num/den of the way from a to b (integers, rounded)."""
    return (a[0] + ((b[0] - a[0]) * num * 2 + den) // (2 * den),
            a[1] + ((b[1] - a[1]) * num * 2 + den) // (2 * den),
            a[2] + ((b[2] - a[2]) * num * 2 + den) // (2 * den))


def scaled(rgb, percent):
    """(r, g, b) at `percent` of its brightness (rounded)."""
    return ((rgb[0] * percent + 50) // 100, (rgb[1] * percent + 50) // 100,
            (rgb[2] * percent + 50) // 100)


def _loads(payload):
    """The JSON document in `payload` (a memoryview into the MQTT packet buffer).

    MicroPython's json parses any buffer in place: no copy of the payload (the
    backend's area index is ~1 KB, a big block on a 64 KiB heap). CPython's
    wants bytes.
    """
    try:
        return json.loads(payload)
    except TypeError:
        return json.loads(bytes(payload))


def stale_colour(phase_ms):
    """The calm stale pattern at `phase_ms` into a breath: a triangle wave of neutral white."""
    half = _BREATH_MS // 2
    pos = phase_ms % _BREATH_MS
    rise = pos if pos < half else _BREATH_MS - pos
    percent = _STALE_LOW + (_STALE_HIGH - _STALE_LOW) * rise // half
    level = 255 * percent // 100
    return (level, level, level)


class Node:
    """The display role (see the module comment)."""

    def __init__(self, ctx):
        self.ctx = ctx
        self.cfg = cfg = ctx.config["display"]      # checked at boot (firmware.config)
        self.hal = ctx.hal
        self.palette = [parse_colour(c) for c in cfg["palette"]]
        self.topic = cfg["topic"]
        self.transition_ms = cfg["transition_s"] * 1000
        night = cfg["night"]
        self.night = None
        if night is not None:
            self.night = (minute_of_day(night["start"]), minute_of_day(night["end"]),
                          night["brightness"])
        self.strip = None
        # The packet buffer is the node's one large block: taken first, while the
        # heap is still in one piece (the app collects just before this).
        mqtt = cfg["mqtt"]
        client_id = mqtt["client_id"] or "knute-display-%08x" % ctx.device_id
        self.mqtt = mqttsub.Subscriber(
            mqtt["host"], mqtt["port"], client_id, self.topic, self.on_message,
            self.hal.ticks_diff, self.hal.random_below, mqtt["keepalive_s"], mqtt["user"],
            mqtt["password"], mqtt["max_packet"], ctx.log)
        # What the index says
        self.level = None             # 1.. or None (none yet / withheld)
        self.status_text = None
        self.received_s = None        # node clock at reception
        self.valid_until = None       # unix s from the payload, or None
        self.updated_at = None        # the payload's updated_at (the backend's clock)
        self.messages = 0
        self.bad_messages = 0
        # What the strip shows
        self.shown = (0, 0, 0)        # last colour written
        self.fade_from = (0, 0, 0)
        self.fade_ref = 0
        self.key = None               # (level or _STALE, brightness percent) being shown
        self.changes = 0

    # --- Role interface ------------------------------------------------

    def start(self):
        """Open the strip (dark), join the network, prepare the MQTT subscription."""
        cfg = self.cfg
        hal = self.hal
        self.strip = hal.strip(cfg["strip"], cfg["pixels"])
        self.strip.fill((0, 0, 0))
        self.strip.write()
        self.fade_ref = hal.ticks_ms()
        if cfg["wifi"] is not None:
            try:
                hal.network(cfg["wifi"])
            except OSError as exc:      # the interface keeps trying; MQTT retries
                self.ctx.log("display: " + str(exc))
        mqtt = cfg["mqtt"]
        self.ctx.log("display: %d pixels, area %s from %s:%d, palette %s" % (
            cfg["pixels"], cfg["area"], mqtt["host"], mqtt["port"],
            " ".join([colour_hex(c) for c in self.palette])))

    def poll(self, now_ms):
        """Read the broker, show the next frame; ms until the next call."""
        wait = self.mqtt.step(now_ms)
        frame_wait = self.show(now_ms, self.hal.time())
        return frame_wait if frame_wait < wait else wait

    def status(self):
        """Counters for the console and bench tools."""
        return {"level": self.level, "shown": colour_hex(self.shown), "messages": self.messages,
                "bad_messages": self.bad_messages, "changes": self.changes,
                "mqtt": mqttsub.STATE_NAMES[self.mqtt.state] if self.mqtt else "none"}

    # --- Input ---------------------------------------------------------

    def on_message(self, topic, payload):
        """Take one index message (docs/schema/air_index.schema.json)."""
        self.messages += 1
        try:
            doc = _loads(payload)
            level = self._level(doc)
            until = doc.get("valid_until")
            until = parse_utc(until) if until is not None else None
        except (ValueError, TypeError, KeyError, AttributeError, MemoryError) as exc:
            # (MemoryError too: raised out of the MQTT reader it would cut the rest
            # of the stream short, and the next packet would be read from its middle.)
            # A bad message changes nothing: what was shown ages into stale.
            self.bad_messages += 1
            self.ctx.log("display: bad index message on %s (%s)" % (bytes(topic).decode(), exc))
            return
        updated = doc.get("updated_at")
        # The broker hands the retained index out again at every reconnection: only
        # a new computation (a new updated_at) makes it fresh again, or a node
        # without a set clock would show an old "good" for as long as the backend
        # stays silent.
        if updated is None or updated != self.updated_at or level != self.level:
            self.received_s = self.hal.time()
        self.updated_at = updated
        self.level = level
        self.status_text = doc.get("status")
        self.valid_until = until
        self.ctx.log("display: index level=%s status=%s valid_until=%s"
                     % (level, self.status_text, until))

    def _level(self, doc):
        scale = self.cfg["scale"]
        entry = (doc.get("scales") or {}).get(scale)
        if entry is None and doc.get("scale") == scale:
            entry = doc
        if entry is None:
            raise ValueError("no %s level in the message" % scale)
        level = entry.get("level")
        if doc.get("status") == "withheld" or level is None:
            return None
        if (not isinstance(level, int) or isinstance(level, bool)
                or not 1 <= level <= len(self.palette)):
            raise ValueError("level %r outside the palette" % (level,))
        return level

    # --- Output --------------------------------------------------------

    def fresh(self, now_s):
        """True when the index may be shown as a colour (see the module comment)."""
        if self.level is None or self.received_s is None:
            return False
        if now_s - self.received_s > self.cfg["stale_s"]:
            return False
        return not (self.valid_until is not None and now_s >= _CLOCK_SET_S
                    and now_s >= self.valid_until)

    def brightness(self, now_s):
        """Percent of full brightness now: the day's, or the night's by the schedule."""
        percent = self.cfg["brightness"]
        if self.night is not None:
            minute = ((now_s + self.cfg["utc_offset_min"] * 60) // 60) % 1440
            if in_window(minute, self.night[0], self.night[1]):
                percent = percent * self.night[2] // 100
        return percent

    def target(self, now_ms, now_s):
        """(key, colour) the strip should show now, before the cross-fade."""
        percent = self.brightness(now_s)
        if self.fresh(now_s):
            return (self.level, percent), scaled(self.palette[self.level - 1], percent)
        return (_STALE, percent), scaled(stale_colour(now_ms), percent)

    def show(self, now_ms, now_s):
        """Write the frame for now (when it differs); ms until the next frame is due."""
        key, goal = self.target(now_ms, now_s)
        if key != self.key:
            if self.key is not None:
                self.changes += 1
            self.key = key
            self.fade_from = self.shown
            self.fade_ref = now_ms
        moving = key[0] == _STALE
        elapsed = self.hal.ticks_diff(now_ms, self.fade_ref)
        if elapsed < self.transition_ms:
            colour = blend(self.fade_from, goal, elapsed, self.transition_ms)
            moving = True
        else:
            colour = goal
        if colour != self.shown:
            self.shown = colour
            self.strip.fill(colour)
            self.strip.write()
        return self.cfg["frame_ms"] if moving else _STEADY_MS
