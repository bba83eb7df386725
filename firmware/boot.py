# The node's boot sequence (see firmware/app.py for the order and why).
# Needed only until the loop starts: the app unloads this module then.

import gc
import sys
from os import remove, stat

from firmware import state
from firmware.app import unload

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

_BROWNOUT_WAIT_MS = const(60000)


def _safe_mode(hal, reason):
    from firmware import status  # the safe-mode report (state/safe_mode.json)

    status.safe_mode(hal, reason)


def port_name():
    """'esp32', 'rp2' or 'unix' for the running MicroPython port (CPython: 'unix')."""

    if sys.platform == "esp32":
        return "esp32"
    if sys.platform == "rp2":
        return "rp2"
    return "unix"


def port_hal():
    """A Hal object for the running port."""
    port = port_name()
    if port == "esp32":
        from firmware.hal import esp32 as module
    elif port == "rp2":
        from firmware.hal import rp2 as module
    else:
        from firmware.hal import unix as module
    return module.Hal()


def _make_link(hal, cfg):
    gc.collect()
    if cfg["link"]["type"] == "none":
        return None
    if cfg["link"]["type"] == "lora":
        from firmware import link_lora

        return link_lora.LoraLink(hal.lora_modem(cfg["radio"]), cfg["radio"])
    from firmware import link

    port = hal.uart(cfg["link"]["uart"], cfg["link"]["baud"])
    return link.UartLink(port, cfg["link"]["log"])


def _wait_for_supply(hal, cfg):
    limit = cfg["power"]["brownout_mv"]
    if not limit:
        return
    while True:
        try:
            mv = hal.adc("battery").read_mv()
        except (OSError, KeyError):
            mv = None
        if mv is None or mv >= limit or hal.stopping():
            return
        print("knute: supply low (%d mV < %d mV): waiting before flash writes and radio"
              % (mv, limit))
        hal.sleep_ms(_BROWNOUT_WAIT_MS)


def update_hook():
    """The module-update boot hook on a node with an upd/ folder; True: another set is active."""
    try:
        stat("upd")
    except OSError:
        return False
    from firmware import downlink_update

    if downlink_update.hook():
        return True
    unload("firmware.downlink_update")
    unload("firmware.downlink_files")
    return False


def boot(config_path="config.json", hal=None):
    """Steps 1-6 of the boot; returns (hal, ctx, role module) or None after safe mode.

    With `hal` (a restart in place, firmware.app) the HAL and its clock are kept.
    """
    again = hal is not None
    if not again:
        hal = port_hal()
    # The heap is not compacted, and on a 64 KiB heap fragmentation is what
    # runs out: the protocol (long-lived) comes in first, then config.py (big,
    # needed once) on top of it, dropped again before the rest of the
    # long-lived code fills the space it leaves; a collection after each step
    # keeps boot-time garbage from ending up between long-lived objects.
    from protocol import frame

    gc.collect()
    from firmware import config

    try:
        cfg = config.load(config_path)
    except config.ConfigError as exc:
        _safe_mode(hal, str(exc))
        return None
    unload("firmware.config")
    unload("firmware.config_display")
    del config
    gc.collect()
    # An air node with downlinks holds room for the names' table step until its
    # first send (firmware.names_room), taken while the top of the heap is free;
    # a later life has its names already. Imported by a string: its names stay
    # off every other node's boot.
    room = None
    if not again and cfg["downlink"] and cfg["role"] == "air_quality":
        room = __import__("firmware.names_room", None, None, ("take",)).take()
        unload("firmware.names_room")
    if "radio" in cfg:
        from protocol import airtime

        radio = cfg["radio"]
        key = "radio.freq_hz"
        try:
            airtime.sub_band(radio["freq_hz"], radio["bw_hz"])
            for i in range(len(radio["channels"])):
                key = "radio.channels[%d]" % i
                airtime.sub_band(radio["channels"][i], radio["bw_hz"])
        except ValueError as exc:
            _safe_mode(hal, key + ": " + str(exc))
            return None
        # The sub-band table leaves the heap until the duty-cycle ledger takes
        # it back after boot (Context.start_duty): 2 KB of the boot's peak.
        unload("protocol.airtime")
        del airtime
    from firmware import context, roles  # long-lived: load them first

    if cfg["link"]["type"] == "none":
        # A node without an uplink (the display) never builds a frame: the
        # protocol leaves the heap again, room for the role's buffers. (Here,
        # not in Context: a sending node's resident code stays as it was.)
        del context.ccm, context.frame
        for name in ("protocol.frame", "protocol.cbor", "protocol.ccm", "protocol.kinds",
                     "protocol.errors"):
            unload(name)
        del frame
    gc.collect()
    gc.collect()
    try:
        role = roles.load(cfg["role"])
    except ImportError as exc:
        _safe_mode(hal, "role " + cfg["role"] + " is not installed on this node ("
                   + str(exc) + ")")
        return None
    gc.collect()
    try:
        if not again:
            hal.configure(cfg)
    except (OSError, ValueError, ImportError, KeyError) as exc:
        _safe_mode(hal, "board setup failed (" + cfg["board"] + "): " + str(exc))
        return None
    _wait_for_supply(hal, cfg)

    bench = cfg["bench"]
    pause = None
    trace = None
    if bench.get("pause_writes_ms"):
        pause_ms = bench["pause_writes_ms"]
        pause_for = bench.get("pause_writes_of")    # state names, or None for all
        hold = bench.get("hold_write")      # [name, n]: that write stays paused until killed
        held = [0]

        def pause(name):
            if pause_for is None or name in pause_for:
                import time

                if hold and hold[0] == name:
                    held[0] += 1
                    if held[0] == hold[1]:
                        # A kill -9 test lands by this line, not by the clock.
                        print("knute: holding the " + name + " write")
                        while True:
                            time.sleep(1)
                time.sleep(pause_ms / 1000)
    if bench.get("trace_writes"):
        def trace(name):
            print("knute: writing " + name)
    store = state.Store("state", hal.time, pause, trace)
    for name in store.recovered:
        print("knute: state/%s: a write was cut short (power loss); the previous value stands"
              % name)

    clock = store.get("clock")
    if isinstance(clock, dict) and isinstance(clock.get("offset_ms"), int):
        hal.offset_ms = clock["offset_ms"]      # the clock a downlink set (protocol.md 12.6)
    boots = store.get("boots", 0)
    if not isinstance(boots, int):
        boots = 0
    limit = cfg["power"]["boot_loop_limit"]
    if hal.reset_cause()[:4] == "deep":   # "deep-sleep": no new name on the boot path
        boots = 0       # a deep-sleeping meter boots at every wake-up: no loop
    if boots >= limit:
        _safe_mode(hal, "boot loop: %d resets without a completed send (last reset: %s); "
                   "remove state/boots.json once the cause is fixed"
                   % (boots, hal.reset_cause()))
        return None
    store.put("boots", boots + 1)
    try:
        remove("state/safe_mode.json")      # an old safe-mode report: this boot got past it
    except OSError:
        pass
    try:
        uplink = _make_link(hal, cfg)
    except (OSError, ValueError, ImportError) as exc:
        _safe_mode(hal, "link " + cfg["link"]["type"] + " did not start: " + str(exc))
        return None
    fcnt = state.FrameCounter(store, cfg["fcnt_block"])
    gc.collect()
    ctx = context.Context(cfg, hal, store, uplink, fcnt, hal.led())
    if room is not None:
        ctx.dl[7] = room
    ctx.log("boot role=%s device=%08x board=%s port=%s reset=%s fcnt=%d link=%s"
            % (cfg["role"], cfg["device_id"], cfg["board"], hal.port, hal.reset_cause(),
               fcnt.next, cfg["link"]["type"]))
    return hal, ctx, role

