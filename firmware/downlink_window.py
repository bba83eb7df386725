# A node's side of the downlink path around one uplink (docs/protocol.md
# section 12): the report that goes into the frame (the `dl` field, 12.7),
# then the receive windows after it (12.6).
#
# Loaded by Context.send() around a send and dropped again after the windows:
# a booted air node has about 2 KB of heap to spare. A downlink needs far
# more to be checked and applied (firmware.downlink: about 14 KB of code,
# and up to 9 KB while it works), more than any role leaves free on a
# 64 KiB heap. So a heard packet is only stored (state/dlrx.json) and the
# app restarts the node in place: it drops the role and everything it
# loaded, applies the downlink in the heap that gives back
# (firmware.downlink_apply) and boots again with the same HAL, so the clock
# runs on and the new configuration, key and clock take effect at once.
#
# The report's flags are worked out here from small state, the same rules as
# firmware.downlink.Downlink.report (a test checks that they agree), plus the
# clock requests of the node's own data-rate back-off (_backoff, _count), which
# only a sending LoRa node runs.
#
# Windows (LoRaWAN class A, section 12.6): RX1 opens 1 s after the uplink's
# end on its channel and SF, RX2 2 s after it on 869.525 MHz SF12; each stays
# open 8 symbols unless a packet starts (firmware.downlink_lora). On a serial
# link the gateway writes the downlink as a FRAME record while the windows are
# open: the node reads its UART from the uplink's end until RX2 closes
# (firmware.downlink_uart). Each is loaded only for its link, after the send.

import gc

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

# protocol.downlink_send's numbers (tests/firmware/test_node_downlink.py checks them).
_FLAG_WANT = const(1)
_FLAG_CLOCK = const(2)
_FLAG_ALARM = const(4)
_FLAG_REKEY = const(8)
_FLAG_UPDATE = const(16)
_RX2_DELAY_MS = const(2000)     # LoRaWAN RECEIVE_DELAY2; RX2 at SF12 (RP002-1.0.4 2.4)
_RX2_SF = const(12)
_PREAMBLE_SYMBOLS = const(8)    # enough to detect a preamble
_ALARM_REPEATS = const(6)       # firmware.downlink.ALARM_REPEATS
_MODULES = ("firmware.downlink_update", "firmware.downlink_files", "firmware.downlink_confirm",
            "firmware.downlink_lora",
            "firmware.downlink_uart", "firmware.hal.unix_bench_rx", "firmware.downlink_window")
# Positions in Context.dl
_ALARM = const(0)
_REPEAT = const(1)
_RX_MS = const(2)
_REKEY = const(4)
_HEARD = const(5)
_ADR = const(6)
# The node's own data-rate back-off (docs/radio.md, "A node's own back-off"),
# after LoRaWAN L2 1.0.4 (TS001-1.0.4) section 4.3.1.1 and its table 9:
# ADR_ACK_LIMIT and ADR_ACK_DELAY, counted in uplinks as there, but shorter
# than its 64 / 32: a meter sends 4 times a day, and 64 + 32 uplinks would
# leave it unheard for 24 days before its first step (here: 3 days).
_ACK_LIMIT = const(8)
_ACK_DELAY = const(4)


def window_ms(sf, bw_hz):
    """How long a receive window at `sf` stays open without a packet: 8 symbols, rounded up."""
    return (_PREAMBLE_SYMBOLS * (1 << sf) * 1000 + bw_hz - 1) // bw_hz


def _alarm(ctx):
    # [bits waiting for ack_alarm, repeats sent], from state/alarm.json (the
    # same file firmware.downlink keeps) on first use.
    alarm = ctx.dl[_ALARM]
    if alarm is None:
        rec = ctx.state.get("alarm")
        alarm = [rec.get("bits", 0), rec.get("repeats", 0)] if isinstance(rec, dict) \
            else [0, 0]
        ctx.dl[_ALARM] = alarm
    return alarm


def _backoff(ctx):
    # state/adr.json, written by firmware.downlink when a downlink set radio.sf
    # or radio.power_dbm: [provisioned sf, dbm, sf, dbm set by that downlink,
    # sf, dbm in use, uplinks since a downlink was heard, the downlink counter
    # then], or False (none, or config.json provisioned anew since).
    rec = ctx.dl[_ADR]
    if rec is None:
        rec = ctx.state.get("adr")
        radio = ctx.config["radio"]
        if not isinstance(rec, list) or len(rec) != 8 or rec[2] != radio["sf"] \
                or rec[3] != radio["power_dbm"]:
            rec = False
        else:
            last = ctx.state.get("dcnt")
            last = last.get("last", -1) if isinstance(last, dict) else -1
            if last != rec[7]:      # an authentic downlink heard since: count afresh
                rec[6] = 0
                rec[7] = last
            _tune(ctx, rec)
        ctx.dl[_ADR] = rec
    return rec


def _tune(ctx, rec):
    # The link to the settings in use (the boot made it with config.json's).
    link = ctx.link
    radio = ctx.config["radio"]
    if link.sf != rec[4] or radio["power_dbm"] != rec[5]:
        try:
            link.modem.configure({"sf": rec[4], "output_power": rec[5]})
        except OSError:
            link.errors += 1
        link.sf = rec[4]
        radio["power_dbm"] = rec[5]


def report(ctx, values):
    """The `dl` report series for a frame with `values`, or None (section 12.7)."""
    flags = 0
    rec = getattr(ctx.link, "lora", False) and _backoff(ctx)
    if not ctx.hal.clock_set or (rec and rec[6] >= _ACK_LIMIT and _lowered(rec)):
        # no clock command since the last reset, or a back-off asks whether it is heard
        flags |= _FLAG_CLOCK
    bits = values.get("alarms", 0)
    alarm = _alarm(ctx)
    if bits & ~alarm[0]:
        alarm[0] |= bits
        alarm[1] = 0
        ctx.state.put("alarm", {"bits": alarm[0], "repeats": 0})
    if bits & alarm[0]:
        flags |= _FLAG_ALARM
    if ctx.dl[_REKEY]:
        flags |= _FLAG_REKEY
    import os

    try:
        os.stat("upd/stage.json")
        flags |= _FLAG_UPDATE
    except OSError:
        pass
    entries = ctx.state.get("dlrep")
    if not isinstance(entries, list):
        entries = []
    if flags:
        flags |= _FLAG_WANT
    elif not entries:
        return None
    return [flags] + entries[-8:]  # noqa: RUF005 (no star-unpacking in MicroPython)


def after_send(ctx, sent_report, fcnt, end_ms):
    """The frame with `sent_report` left at board time `end_ms`: listen in the windows.

    Confirms a module update after the first send since boot. A heard packet
    is stored with the uplink it answers (state/dlrx.json) and ctx.dl says
    so: the app then restarts the node in place to apply it. Otherwise
    ctx.dl says whether the frame's alarm, still unacknowledged, may be sent
    again (at most ALARM_REPEATS times; the role decides when).
    """
    if sent_report is not None and len(sent_report) > 1:
        ctx.state.put("dlrep", [])      # its entries left with the frame
    dls = ctx.dl
    try:
        if ctx.sent == 1:
            import os

            try:
                os.stat("upd/manifest.json")
            except OSError:
                pass                    # never updated: nothing to confirm
            else:
                from firmware import downlink_confirm

                downlink_confirm.confirm(ctx)
        # The bench radio knows the end of its line to the millisecond.
        end_ms = getattr(getattr(ctx.link, "modem", None), "end_ms", end_ms)
        # The frame's encoding and the send left garbage in the holes the
        # window code is loaded into next.
        gc.collect()
        packet = windows(ctx, end_ms)
        dls[_REPEAT] = False
        if packet is not None:
            ctx.state.put("dlrx", {"hex": bytes(packet).hex(), "fcnt": fcnt, "end_ms": end_ms})
            dls[_HEARD] = True
            return
        rec = dls[_ADR]
        if rec and _lowered(rec):
            _count(ctx, rec)
        alarm = _alarm(ctx)
        if sent_report is not None and sent_report[0] & _FLAG_ALARM and alarm[0] \
                and alarm[1] < _ALARM_REPEATS:
            alarm[1] += 1
            ctx.state.put("alarm", {"bits": alarm[0], "repeats": alarm[1]})
            dls[_REPEAT] = True
    finally:
        from firmware.app import unload

        for name in _MODULES:
            unload(name)
        gc.collect()
        if ctx.sent == 1:
            ctx.log("heap: %d bytes used, %d free after the first send"
                    % (gc.mem_alloc(), gc.mem_free()))


def _lowered(rec):
    return rec[4] < rec[0] or rec[5] < rec[1]


def _count(ctx, rec):
    # One more uplink unanswered at settings below the provisioned ones. At
    # ACK_LIMIT the node starts asking for the clock (report()); after each
    # ACK_DELAY more it steps back: the power to the provisioned power first,
    # then the SF up by one, never past the provisioned settings. Written only
    # at those thresholds (deep sleep: at every count, a wake-up is a reset).
    rec[6] += 1
    over = rec[6] - _ACK_LIMIT
    if over < 0 or over % _ACK_DELAY:
        if ctx.config["power"]["sleep"] != "deep":
            return
    elif over:
        if rec[5] < rec[1]:
            rec[5] = rec[1]
        else:
            rec[4] += 1
        ctx.state.put("adr", rec)
        _tune(ctx, rec)
        ctx.log("no downlink heard in %d uplinks: back to sf=%d power_dbm=%d"
                % (rec[6], rec[4], rec[5]))
        return
    ctx.state.put("adr", rec)


def windows(ctx, end_ms):
    """The packet heard in RX1 or RX2 after an uplink that ended at `end_ms`, or None."""
    if ctx.link.lora:
        from firmware import downlink_lora

        return downlink_lora.windows(ctx, end_ms)
    from firmware import downlink_uart

    until = end_ms + _RX2_DELAY_MS + window_ms(_RX2_SF, 125000)
    ctx.dl[_RX_MS] += until - end_ms
    return downlink_uart.listen(ctx.link, ctx.hal, until)
