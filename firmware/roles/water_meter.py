# Water meter: counts pulses from a reed or Hall sensor, keeps the meter index
# and the hourly consumption profile, raises the alarms meter makers raise,
# and sends a frame a few times a day.
#
# Time is the node's unix clock in whole seconds; hour H is [H*3600, H*3600+3600).
# Pulse events are processed in time order: before an event at time t counts,
# every hour that ended by t is closed, so the profile is the same however
# late the node wakes up to read its pulses.
#
# Alarms (bits of protocol.kinds.WATER_ALARMS):
#   leak         no hour without consumption in the last leak_hours (24) hours
#   burst        flow above burst_lph over one flow window
#   backflow     reverse volume since the last frame reached backflow_l
#   tamper       the magnet/cover input is active
#   dry          no consumption for dry_days days
#   low_battery  battery below low_battery_mv
# A bit is sent if its condition is active now or was at any time since the
# last frame that left (latched until sent).
#
# Persistence: state "meter" is written when each hour closes (and every
# persist_pulses pulses when set), so a power cut loses at most the pulses
# counted since the last of those writes. In deep sleep (power.sleep "deep")
# the ULP counts in RTC memory and the meter writes the state, with the
# counters it took ("pulse"), after every take that found pulses (config sets
# persist_pulses to 1), before the CPU sleeps again: a reset never loses a
# pulse nor takes one twice (firmware/ulp_counter.py).

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

from firmware import context

_LEAK = const(1)
_BURST = const(2)
_BACKFLOW = const(4)
_TAMPER = const(8)
_DRY = const(16)
_LOW_BATTERY = const(32)

_SLOTS = const(24)
_STATE_VERSION = const(1)
_LINK_RETRY_S = const(300)
_LINK_TRIES = const(3)
_MAX_INDEX = const(0xFFFFFFFF)
_MAX_SERIES = const(0xFFFFFF)
_ALARM_REPEAT_S = const(1800)   # an alarm frame not acknowledged is sent again after this


class Node:
    """The water_meter role."""

    def __init__(self, ctx):
        self.ctx = ctx
        cfg = ctx.config["water"]
        self.cfg = cfg
        self.ml_per_pulse = int(cfg["litres_per_pulse"] * 1000 + 0.5)
        self.window_s = cfg["flow_window_s"]
        self.source = None
        self.tamper_pin = None
        self.battery_adc = None
        # Meter state (persisted as "meter")
        self.index_ml = 0
        self.hour = None            # the open hour (unix hours)
        self.hour_start_ml = 0      # index at the start of the open hour
        self.profile = [0] * _SLOTS  # closed hours, ring buffer
        self.head = 0               # slot the next closed hour goes to
        self.known = 0              # closed hours held in the ring (0..24)
        self.hours_since_zero = 0   # closed hours since the last one with no consumption
        self.hours_since_use = 0    # closed hours since the last one with consumption
        self.latched = 0
        self.max_flow = 0           # L/h, highest window since the last frame
        self.reverse_ml = 0         # reverse volume since the last frame
        # Not persisted
        self.window = None          # flow window number (t // window_s)
        self.window_ml = 0
        self.flow_lph = 0           # flow of the last closed window
        self.tampered = False
        self.battery_mv = None
        self.unsaved_pulses = 0
        self.send_due = False
        self.send_at = 0
        self.link_tries = 0
        self.phase_s = 0            # the send's offset into its interval (see start)
        # Reused for every frame: the values dict and the profile list.
        self.values = {"index": 0, "profile_end_h": 0, "alarms": 0, "battery": 20,
                       "profile": [0] * cfg["profile_len"]}

    # -- life cycle ----------------------------------------------------------

    def start(self):
        """Open the inputs and restore the meter state."""
        hal = self.ctx.hal
        cfg = self.cfg
        # The saved state is read before the inputs' code loads, while the
        # heap still has room in one piece for the parsed dict (a deep-sleep
        # bench meter loads three modules for its simulated ULP).
        saved = self.ctx.state.get("meter")
        self.source = hal.pulse_source(cfg["pulse"], cfg["direction"], cfg["debounce_ms"])
        if cfg["tamper"]:
            self.tamper_pin = hal.pin(cfg["tamper"])
        if cfg["battery"]:
            self.battery_adc = hal.adc(cfg["battery"])
        self._restore(hal.time(), saved)
        del saved
        phase = self.ctx.config.get("send_phase_s")
        if phase is None and self.ctx.duty is not None:
            # On a LoRa link the send's phase in its interval is drawn at boot
            # over the whole interval, so meters whose power returns together
            # (a district after a cut) do not send in step. The device id is
            # mixed in: boards whose generators start alike (the same bench
            # seed, weak entropy at power-up) still get different phases
            # (Fibonacci hashing: consecutive ids land far apart in any period).
            period = 24 // cfg["sends_per_day"] * 3600
            spread = ((self.ctx.device_id * 2654435761) & 0xFFFFFFFF) * period >> 32
            phase = (spread + hal.random_below(period)) % period
        self.phase_s = phase or 0
        self.ctx.log("water_meter: index=%d L hour=%d known=%d L/pulse=%s sends/day=%d"
                     " phase=%d s" % (self.index_ml // 1000, self.hour, self.known,
                                      cfg["litres_per_pulse"], cfg["sends_per_day"],
                                      self.phase_s))

    def _restore(self, now, saved):
        if isinstance(saved, dict) and saved.get("v") == _STATE_VERSION:
            self.index_ml = saved["index_ml"]
            self.hour = saved["hour"]
            self.hour_start_ml = saved["hour_start_ml"]
            ring = saved["profile"]
            for i in range(_SLOTS):
                self.profile[i] = ring[i]
            self.head = saved["head"]
            self.known = saved["known"]
            self.hours_since_zero = saved["since_zero"]
            self.hours_since_use = saved["since_use"]
            self.latched = saved["latched"]
            self.max_flow = saved["max_flow"]
            self.reverse_ml = saved["reverse_ml"]
            self.source.last = saved.get("pulse")   # deep sleep: firmware.ulp_counter
            if now < self.hour * 3600:
                if self.ctx.hal.clock_set:
                    # A downlink set the clock back (the node ran fast): the
                    # open hour goes on as the hour of the right time.
                    self.hour = now // 3600
                else:
                    # A board without a backed-up RTC restarts at its epoch after
                    # a power cut: carry on from the last saved hour.
                    self.ctx.log("clock %d is behind the saved hour %d: clock set to it"
                                 % (now, self.hour))
                    self.ctx.hal.set_time(self.hour * 3600)
        else:
            self.hour = now // 3600
            self.hour_start_ml = self.index_ml
            self.ctx.log("water_meter: no saved state, starting a new index")

    def _save(self):
        saved = {
            "v": _STATE_VERSION, "index_ml": self.index_ml, "hour": self.hour,
            "hour_start_ml": self.hour_start_ml, "profile": self.profile, "head": self.head,
            "known": self.known, "since_zero": self.hours_since_zero,
            "since_use": self.hours_since_use, "latched": self.latched,
            "max_flow": self.max_flow, "reverse_ml": self.reverse_ml,
        }
        # Deep sleep only (firmware.ulp_counter): a thirteenth key would make
        # every meter's hourly dict a block bigger, where a LoRa meter's heap
        # has none to spare. "pulse" and "last" are names the boot has
        # interned already (docs/firmware.md, "Memory", qstrs).
        taken = getattr(self.source, "last", None)
        if taken is not None:
            saved["pulse"] = taken
        self.ctx.state.put("meter", saved)
        self.unsaved_pulses = 0

    # -- counting ------------------------------------------------------------

    def _flow_to(self, t):
        """Close the flow window if `t` is past it (burst check, max_flow)."""
        window = t // self.window_s
        if window == self.window:
            return
        if self.window is not None:
            flow = self.window_ml * 3600 // self.window_s // 1000
            if flow > self.max_flow:
                self.max_flow = flow
            if flow > self.cfg["burst_lph"]:
                self.latched |= _BURST
            # the flow now: that window's, or none if a quiet window followed it
            self.flow_lph = flow if window == self.window + 1 else 0
            self.window_ml = 0
        self.window = window

    def _add(self, t, forward, reverse):
        self._flow_to(t)
        fwd_ml = forward * self.ml_per_pulse
        rev_ml = reverse * self.ml_per_pulse
        self.window_ml += fwd_ml
        self.index_ml += fwd_ml - rev_ml
        if self.index_ml < 0:
            self.index_ml = 0
        if rev_ml:
            self.reverse_ml += rev_ml
            if self.reverse_ml >= self.cfg["backflow_l"] * 1000:
                self.latched |= _BACKFLOW
        self.unsaved_pulses += forward + reverse

    def _close_hour(self):
        slot = self.index_ml // 1000 - self.hour_start_ml // 1000
        if slot < 0:
            slot = 0
        if slot > _MAX_SERIES:
            slot = _MAX_SERIES
        self.profile[self.head] = slot
        self.head = (self.head + 1) % _SLOTS
        if self.known < _SLOTS:
            self.known += 1
        if slot:
            self.hours_since_zero += 1
            self.hours_since_use = 0
        else:
            self.hours_since_zero = 0
            self.hours_since_use += 1
        self.hour_start_ml = self.index_ml
        self.hour += 1
        period_h = 24 // self.cfg["sends_per_day"]
        if (self.hour - self.cfg["send_offset_h"]) % period_h == 0:
            self.send_due = True
            self.send_at = self.hour * 3600 + self.phase_s
            self.link_tries = 0

    def _roll(self, t):
        """Close every hour that ended by unix time `t`."""
        target = t // 3600
        if target <= self.hour:
            return
        closed = 0
        while self.hour < target:
            if closed > _SLOTS and target - self.hour > 1:
                # Powered off for days: the ring already holds only zeros.
                skipped = target - self.hour - 1
                self.hours_since_use += skipped
                self.hours_since_zero = 0
                self.hour += skipped
            self._close_hour()
            closed += 1
        self._save()

    # -- alarms --------------------------------------------------------------

    def _active(self):
        bits = 0
        leak_hours = self.cfg["leak_hours"]
        if self.known >= leak_hours and self.hours_since_zero >= leak_hours:
            bits |= _LEAK
        if self.flow_lph > self.cfg["burst_lph"]:
            bits |= _BURST
        if self.reverse_ml >= self.cfg["backflow_l"] * 1000:
            bits |= _BACKFLOW
        if self.tampered:
            bits |= _TAMPER
        if self.hours_since_use >= self.cfg["dry_days"] * 24:
            bits |= _DRY
        if self.battery_mv is not None and self.battery_mv < self.cfg["low_battery_mv"]:
            bits |= _LOW_BATTERY
        return bits

    # -- sending -------------------------------------------------------------

    def _profile_values(self):
        count = self.cfg["profile_len"]
        if self.known < count:
            count = self.known
        if count < 1:
            count = 1
        out = self.values["profile"]
        if len(out) != count:
            out = [0] * count
        pos = (self.head - count) % _SLOTS
        for i in range(count):
            out[i] = self.profile[pos]
            pos = (pos + 1) % _SLOTS
        return out

    def _send(self, now):
        alarms = self.latched | self._active()
        self.latched = alarms
        values = self.values
        index = self.index_ml // 1000
        values["index"] = index if index <= _MAX_INDEX else _MAX_INDEX
        values["profile_end_h"] = self.hour % 256
        values["alarms"] = alarms
        # Battery in 0..20 steps of 5 %; 20 when the board has no battery input.
        steps = 20
        if self.battery_mv is not None:
            lo = self.cfg["battery_empty_mv"]
            steps = (self.battery_mv - lo) * 20 // (self.cfg["battery_full_mv"] - lo)
            steps = 0 if steps < 0 else (20 if steps > 20 else steps)
        values["battery"] = steps
        values["profile"] = self._profile_values()
        if alarms:
            values["max_flow"] = self.max_flow if self.max_flow <= _MAX_SERIES else _MAX_SERIES
        elif "max_flow" in values:
            del values["max_flow"]
        if self.ctx.send(values):
            self.send_due = False
            self.latched = self._active()
            self.max_flow = self.flow_lph
            self.reverse_ml = 0
            if self.ctx.dl and self.ctx.dl[1]:
                # No ack_alarm came in this frame's windows: send again, bounded.
                self.send_due = True
                self.send_at = self.ctx.hal.time() + _ALARM_REPEAT_S
                self.link_tries = 0
            return
        result = self.ctx.last_result
        if result == context.DEFERRED:
            self.send_at = now + self.ctx.retry_s
        elif result == context.LINK_ERROR and self.link_tries < _LINK_TRIES:
            self.link_tries += 1
            self.send_at = now + _LINK_RETRY_S
        else:
            self.send_due = False   # the next frame's profile covers these hours

    # -- the loop ------------------------------------------------------------

    def poll(self, now_ms):
        """Count what arrived, close hours, send when due; ms until the next need."""
        now = self.ctx.hal.time()
        while True:
            event = self.source.take(now)
            if event is None:
                break
            t, forward, reverse = event
            self._roll(t)
            self._add(t, forward, reverse)
        self._roll(now)
        self._flow_to(now)
        if self.tamper_pin is not None:
            self.tampered = self.tamper_pin.value() == self.cfg["tamper_active"]
        if self.battery_adc is not None:
            self.battery_mv = self.battery_adc.read_mv()
        self.latched |= self._active()
        limit = self.cfg["persist_pulses"]
        if limit and self.unsaved_pulses >= limit:
            self._save()
        if self.send_due and now >= self.send_at:
            self._send(now)
            now = self.ctx.hal.time()
        wake = (self.hour + 1) * 3600
        if self.window_ml:
            end = (self.window + 1) * self.window_s
            if end < wake:
                wake = end
        if self.send_due and self.send_at < wake:
            wake = self.send_at
        due = self.source.next_due()
        if due is not None and due < wake:
            wake = due
        wait = wake - now
        return 1000 if wait < 1 else wait * 1000

    def status(self):
        """A dict of the meter's state for the console and bench tools."""
        return {"index_l": self.index_ml // 1000, "hour": self.hour, "known": self.known,
                "alarms": self.latched | self._active(), "max_flow": self.max_flow}
