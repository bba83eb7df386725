# Power-state accounting: how long the node spent in each power state today.
#
# The main loop adds each sleep (deep, light or idle, as the port sleeps) to
# ctx.power, Context.send each transmission (by SF and output power), and the
# receive windows count their listening time in ctx.dl; "awake" is the rest
# of the day: the CPU running, the radio in standby. At each new day (and
# when a bench run stops) the node prints one line:
#   knute: power day=19676 ms=86400000 deep=0 light=86371234 idle=0 awake=2690
#          rx=1520 tx=sf12/14:5556
# `knute bench firmware` and tools/power.py turn such a day into µAh with
# the board's current table (docs/firmware.md, "Power budget"). On the unix
# port the clock is the simulated one, so a bench day is accounted like a
# board's.
#
# ctx.power is one list, as every attribute and object costs a node heap:
#   [day, ticks at the start, deep ms, light ms, idle ms,
#    {sf * 100 + 20 + dBm: ms on air}, ctx.dl's receive ms at the start]
# firmware.app keeps it; this module formats it, with the other daily lines
# (flash writes) and the bench's last status line, loaded only to say them.

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

DEEP = const(2)
LIGHT = const(3)
IDLE = const(4)


def line(hal, ctx, acc):
    """The day so far as one console line (see the top of this file)."""
    total = hal.ticks_diff(hal.ticks_ms(), acc[1])
    rx = (ctx.dl[2] if ctx.dl else 0) - acc[6]
    sent = acc[5]
    tx = ""
    on_air = 0
    for key in sorted(sent):
        on_air += sent[key]
        tx += "%ssf%d/%d:%d" % ("," if tx else "", key // 100, key % 100 - 20, sent[key])
    awake = total - acc[2] - acc[3] - acc[4] - rx - on_air
    return "power day=%d ms=%d deep=%d light=%d idle=%d awake=%d rx=%d tx=%s" % (
        acc[0], total, acc[2], acc[3], acc[4], awake if awake > 0 else 0, rx, tx or "-")



def say_status(ctx, node):
    """One console line with the role's counters (sorted key=value pairs)."""
    report = getattr(node, "status", None)
    if report is None:
        return
    values = report()
    ctx.log("status " + " ".join(["%s=%s" % (key, values[key]) for key in sorted(values)]))


def report(hal, ctx, node=None):
    """Log the day so far and start counting the next in the same list.

    At a new day the flash writes and sends follow; at the end of a bench
    run (`node` given) the role's status line comes first.
    """
    acc = ctx.power
    if node is not None:
        say_status(ctx, node)
    ctx.log(line(hal, ctx, acc))
    if node is None:
        store = ctx.state
        ctx.log("flash writes: %d yesterday, %d since boot; sent=%d deferred=%d"
                % (store.writes_yesterday, store.writes_total, ctx.sent, ctx.deferred))
    acc[0] = hal.time() // 86400
    acc[1] = hal.ticks_ms()
    acc[2] = acc[3] = acc[4] = 0
    acc[5].clear()
    acc[6] = ctx.dl[2] if ctx.dl else 0
