# Boot, safe mode and the main loop.
#
# Boot (firmware.boot, unloaded once done so its code leaves the heap):
#   1. read and check config.json        -> safe mode with the reason if wrong
#   2. set up the port HAL (bench wiring or board pin map)
#   3. brown-out guard: wait while the battery reads below power.brownout_mv
#      (nothing is written to flash before the supply is known good)
#   4. open state/, drop any half-written file, count the boot
#   5. boot-loop guard: too many resets without a completed send -> safe mode
#   6. link, frame counter, role
# Then the loop here asks the role what to do (poll), feeds the watchdog and
# sleeps until the role's next need, never longer than half the watchdog period.

import gc
import sys

from firmware.hal import NullWatchdog

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

_POLL_FAILURES = const(5)     # consecutive failed polls before a reset
_HEALTHY_S = const(600)       # uptime after which a node that sends nothing counts as booted
_LIGHT = const(3)             # firmware.power.LIGHT, IDLE, DEEP: ctx.power's sleep ms
_IDLE = const(4)
_DEEP = const(2)
# config keys nobody reads once the node runs (dropped to give the heap back)
_BOOT_ONLY = ("key", "key_bytes", "key_next", "key_next_bytes", "board", "fcnt_block",
              "bench")


def _print_exception(exc):
    printer = getattr(sys, "print_exception", None)
    if printer is not None:
        printer(exc)
    else:
        print(repr(exc))


def unload(name):
    """Drop a module needed only at boot, so that its code leaves the heap."""
    if name in sys.modules:
        del sys.modules[name]
    package, _, attr = name.rpartition(".")
    parent = sys.modules.get(package)
    if parent is not None and attr in parent.__dict__:
        delattr(parent, attr)


def report(hal, ctx, node=None):
    """Say the day's power line (firmware.power) and, at a bench run's end, the status."""
    # The daily lines (and, with `node`, the bench's last status line) come
    # from firmware.power, loaded only to say them: a LoRa meter's heap has a
    # few hundred bytes to spare. A node must not stop for a report: when the
    # heap cannot take them (the 64-bit air node at a bench run's end) the
    # counters carry on and the next day's line covers both days (its ms=).
    gc.collect()
    try:
        from firmware import power

        power.report(hal, ctx, node)
    except MemoryError:
        pass
    unload("firmware.power")
    gc.collect()


def run(hal, ctx, node):
    """The main loop: poll the role, feed the watchdog, sleep; True to apply a downlink."""
    power = ctx.config["power"]
    wdt_ms = power["wdt_s"] * 1000
    wdt = hal.watchdog(wdt_ms) if wdt_ms else NullWatchdog()
    ctx.wdt = wdt
    max_nap = wdt_ms // 2 if wdt_ms else 3600000
    started = hal.time()
    booted = False
    failures = 0
    day = hal.time() // 86400
    store = ctx.state
    # Power-state accounting (the list is described in firmware/power.py). The
    # sleep between polls is light sleep where the port does it
    # (docs/firmware.md, "Power"): rp2 idles whatever power.sleep says.
    acc = [day, hal.ticks_ms(), 0, 0, 0, {}, ctx.dl[2] if ctx.dl else 0]
    ctx.power = acc
    nap = _IDLE
    if power["sleep"] == "light" and hal.port != "rp2":
        nap = _LIGHT
    elif power["sleep"] == "deep":
        nap = _DEEP
    while True:
        wdt.feed()
        if hal.stopping():
            # A last poll first: what fell due before the stop time is done even
            # when the process was held up past it (a loaded bench machine jumps
            # a scaled clock by minutes), so a bench run's output does not
            # depend on the machine's load.
            try:
                node.poll(hal.ticks_ms())
            except Exception as exc:  # leaving anyway; the fault is logged
                ctx.log("error in %s.poll: %r" % (ctx.config["role"], exc))
            report(hal, ctx, node)
            ctx.log("bench: stop_after_s reached, leaving the loop")
            return
        try:
            wait = node.poll(hal.ticks_ms())
            failures = 0
            if ctx.dl and ctx.dl[5]:
                # A window heard a downlink: main() restarts in place to apply it.
                if hasattr(node, "_save"):
                    node._save()
                store.put("boots", 0)
                return True
        except Exception as exc:  # a role fault must not stop the meter for good
            failures += 1
            ctx.log("error in %s.poll (%d in a row): %r" % (ctx.config["role"], failures, exc))
            _print_exception(exc)
            if failures >= _POLL_FAILURES:
                ctx.log("resetting after repeated errors")
                hal.reset()
                return
            wait = 1000
        now = hal.time()
        if not booted and (ctx.sent or now - started >= _HEALTHY_S):
            store.put("boots", 0)
            booted = True
        if now // 86400 != day:
            day = now // 86400
            report(hal, ctx)
        if wait > hal.max_sleep_ms():
            wait = hal.max_sleep_ms()
        if wait > max_nap and nap != _DEEP:     # a deep sleep ends in a reset: no watchdog
            wait = max_nap
        slept = hal.ticks_ms()
        hal.sleep_ms(wait)
        acc[nap] += hal.ticks_diff(hal.ticks_ms(), slept)


def main(config_path="config.json", hal=None):
    """Boot the node and run it (main.py); what main.py must do next, else None.

    False at once when the module-update boot hook made another module set
    active (firmware.boot.update_hook); the HAL when a receive window heard a
    downlink. main.py then hands either to firmware.downlink_apply.restart and
    calls main() again with what it returns (False: boot without the hook).
    """
    from firmware import boot

    if hal is None and boot.update_hook():
        return False
    booted = boot.boot(config_path, hal or None)
    if booted is None:
        return None
    hal, ctx, role = booted
    del booted
    # Boot-only code leaves the heap before the role allocates its buffers.
    unload("firmware.roles")
    unload("firmware.boot")
    del boot
    gc.collect()
    node = role.Node(ctx)
    ctx.start_duty()    # after the role's buffers: a LoRa node's heap peak (docs/firmware.md)
    try:
        node.start()
    except (OSError, ValueError) as exc:
        from firmware import status

        status.safe_mode(hal, "role " + ctx.config["role"] + " did not start: " + str(exc))
        return None
    cfg = ctx.config
    for key in _BOOT_ONLY:
        if key in cfg:
            del cfg[key]
    unload("firmware.hal.unix_wiring")
    gc.collect()
    ctx.log("heap: %d bytes used, %d free after boot" % (gc.mem_alloc(), gc.mem_free()))
    if run(hal, ctx, node):
        ctx.log("restarting in place to apply a downlink")
        return hal
    return None
