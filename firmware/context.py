# What a role gets from the app: its config, the HAL, persistent state, a
# console, and send(values), which turns raw field values into an encrypted
# frame with the next frame counter and puts it on the link under the
# jitter and duty-cycle rules.
#
# Downlinks (docs/protocol.md section 12): send() puts the report (the `dl`
# field) into each frame and opens the receive windows after it, both done by
# firmware.downlink_window, which is loaded only around a send and leaves the
# heap after it (see there).

from firmware.hal import NullWatchdog
from protocol import ccm, frame

# send() results, also kept in ctx.last_result for the console and tests
SENT = "sent"
DEFERRED = "deferred"       # duty cycle: try again in ctx.retry_s seconds
LINK_ERROR = "link_error"
EXHAUSTED = "exhausted"     # frame counter used up: the node needs a new key


class Context:
    """The node's services for a role (see firmware.roles)."""

    def __init__(self, config, hal, state, link, fcnt, led=None):
        self.config = config
        self.hal = hal
        self.state = state
        self.link = link
        self.fcnt = fcnt
        self.led = led
        self.kind = config.get("kind")
        self.device_id = config["device_id"]
        self.tag_len = config["tag_len"]
        # During a key rotation uplinks are sealed with the next key (section 12.9).
        self.key = config.get("key_next_bytes") or config.get("key_bytes")
        # One AES object for the node's life: building it is the costly part of a send.
        self.block = ccm.aes_block(self.key) if self.key else None
        self.jitter_ms = int(config.get("jitter_s", 0) * 1000)
        # A LoRa link's duty-cycle ledger (firmware.dutycycle): built by
        # start_duty() once the boot-only code has left the heap (firmware.app),
        # as the boot is where a 64 KiB heap runs out.
        self.duty = None
        self.wdt = NullWatchdog()   # the app puts the running watchdog here
        self.power = None           # and its power-state counters (firmware.power)
        self.retry_s = 0
        self.last_result = None
        self.sent = 0
        self.deferred = 0
        self.link_errors = 0
        # Downlinks: None unless config "downlink" is true, else the state
        # firmware.downlink_window keeps (one list, as a node's heap counts
        # every attribute): [alarm bits and repeats or None, alarm may repeat,
        # receive-window ms, time-on-air ms, key rotation pending, downlink heard,
        # data-rate back-off record or False, the room firmware.names_room holds
        # for the names' table step until the first send, or None]
        self.dl = [None, False, 0, 0, config.get("key_next_bytes") is not None, False, None,
                   None] \
            if config.get("downlink") else None

    def start_duty(self):
        """Build the duty-cycle ledger and channel plan when the link is LoRa."""
        if self.link is not None and self.link.lora and self.duty is None:
            from firmware import dutycycle

            lcfg = self.config["radio"]
            self.duty = dutycycle.DutyCycle(lcfg["channels"], lcfg["bw_hz"],
                                            self.hal.random_below)

    def log(self, msg):
        """One console line (and a LOG record on a UART link when enabled)."""
        line = "knute: " + msg
        print(line)
        if self.link is not None:
            self.link.log(line)

    def send(self, values):
        """Encode, then send `values` (raw field values by name) on the link.

        Returns True when the frame left, False when it was deferred by the
        duty cycle (ctx.retry_s says when to try again), when the link failed,
        or when the frame counter is exhausted.
        """
        if self.fcnt.exhausted():
            if self.last_result != EXHAUSTED:
                self.log("frame counter exhausted: this node stops sending and needs re-keying")
            self.last_result = EXHAUSTED
            return False
        if self.jitter_ms:
            # In steps, feeding the watchdog: jitter_s may be longer than its period.
            left = self.hal.random_below(self.jitter_ms)
            while left > 0:
                step = left if left < 10000 else 10000
                self.hal.sleep_ms(step)
                self.wdt.feed()
                left -= step
        # The frame's length does not depend on the counter value, so the frame
        # is built with the counter it will get and the counter is reserved only
        # once the duty cycle lets it go.
        fcnt = self.fcnt.peek()
        report = None
        if self.dl is not None:
            spare = self.dl[7]
            if spare is not None:
                # The first send since a reset of a node that holds room for the
                # names' table step (firmware.names_room): free it, collect the
                # polls' garbage so that small pieces go back into the holes
                # below it, then load the modules whose names take the step, the
                # link's window code first (it is smaller than downlink_window,
                # whose names may be the step). By a string: no name of theirs
                # comes into this module (every node loads it).
                self.dl[7] = None
                spare.clear()  # type: ignore[attr-defined]  # slot 7: a list or None
                del spare
                import gc

                gc.collect()
                __import__("firmware.downlink_lora" if self.link.lora
                           else "firmware.downlink_uart")
            from firmware import downlink_window

            report = downlink_window.report(self, values)
        if report is not None:
            values["dl"] = report
        buf = frame.encode(self.kind, self.device_id, fcnt, values, self.key,
                           self.tag_len, self.block)
        if report is not None:
            del values["dl"]
        toa_ms = 0
        if self.duty is not None:
            toa_ms = self.link.time_on_air_ms(len(buf))
            wait = self.duty.wait_s(self.hal.time_ms() // 1000, toa_ms)
            if wait:
                self.duty.deferred += 1
                self.deferred += 1
                self.retry_s = wait
                self.last_result = DEFERRED
                self.log("deferred fcnt=%d: sub-band %s budget used (%d ms of %d), retry in %d s"
                         % (fcnt, self.duty.band, self.duty.used_ms(self.hal.time_ms() // 1000),
                            self.duty.budget_ms, wait))
                return False
            # The hop: the channel drawn for this frame (link.freq_hz after the send).
            self.link.tune(self.duty.freq_hz)
        if self.fcnt.take() != fcnt:
            raise RuntimeError("frame counter moved during a send")
        ok = self.link.send(buf)
        # The clock is read only when something needs it (a clock read allocates
        # on some ports): the duty-cycle ledger and the receive windows.
        end_ms = 0
        if self.duty is not None or self.dl is not None:
            end_ms = self.hal.time_ms()
        # The log below names the end time the ledger holds, not a later clock
        # read: what the console shows is what the budget was checked against.
        # The ledger runs on board time: a clock set by a downlink never moves it.
        sent_t = end_ms // 1000
        if self.duty is not None:
            self.duty.record(sent_t, toa_ms)
        if not ok:
            self.link_errors += 1
            self.last_result = LINK_ERROR
            self.log("link error sending fcnt=%d" % fcnt)
            return False
        self.sent += 1
        self.last_result = SENT
        if self.led is not None:
            self.led.blink(1)
        # The frame's hex ends the line: `knute decode <hex> --key ...` reads it.
        if toa_ms:
            if self.power is not None:
                # firmware.power: ms on air by SF and output power
                sent = self.power[5]
                key = self.link.sf * 100 + 20 + self.config["radio"]["power_dbm"]
                sent[key] = sent.get(key, 0) + int(toa_ms + 0.999)
            if self.dl is not None:
                self.dl[3] += int(toa_ms + 0.999)
            self.log("sent fcnt=%d bytes=%d toa_ms=%d t=%d frame=%s"
                     % (fcnt, len(buf), int(toa_ms + 0.999), sent_t, buf.hex()))
        else:
            self.log("sent fcnt=%d bytes=%d frame=%s" % (fcnt, len(buf), buf.hex()))
        if self.dl is not None:
            from firmware import downlink_window

            downlink_window.after_send(self, report, fcnt, end_ms)
        return True
