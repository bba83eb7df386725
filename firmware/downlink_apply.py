# The restart in place that applies a downlink (see firmware.downlink_window):
# called by main.py once the app has returned, with nothing but the HAL left
# to keep.

import gc
import sys

# modules the HAL object and the app's loop need across the restart
_KEEP = ("firmware.hal", "firmware.hal.unix", "firmware.hal.board",
         "firmware.hal.esp32", "firmware.hal.rp2", "firmware.downlink_apply")


def _unload_all():
    from firmware.app import unload

    for name in list(sys.modules):
        if name.startswith(("firmware.", "protocol.")) and name not in _KEEP:
            unload(name)
    gc.collect()


def lives(hal):
    """The node's later lives (main.py, after the first app.main() returned `hal`).

    Apply what waits, boot again, as long as a life ends that way. Here and not
    in main.py: main.py is compiled on the node, and its code stays in the heap.
    """
    while hal is not None:
        hal = _life(restart(hal))


def _life(hal):
    # app is a local here, so nothing holds it once this life has ended
    from firmware import app

    return app.main("config.json", hal)


def restart(hal, config_path="config.json"):
    """Between two lives of the node (main.py): apply a waiting downlink, drop all modules.

    `hal` is the HAL of the life that ended (a downlink waits), or False
    (a module update became active: nothing to apply). Returns what
    firmware.app.main takes next.
    """
    _unload_all()
    if hal:
        try:
            apply_pending(hal, config_path)
        finally:
            _unload_all()
    return hal


def apply_pending(hal, config_path="config.json"):
    """Check and apply the downlink after_send stored; None when accepted, else the reason.

    Its effects live in the files the next boot reads (config.json, state/)
    and the clock in the HAL, which the next boot keeps.
    """
    from binascii import unhexlify

    from firmware.state import Store

    store = Store("state", hal.time)
    rec = store.get("dlrx")
    store.put("dlrx", None)
    if not isinstance(rec, dict):
        return None
    import json

    with open(config_path) as handle:
        device_id = json.loads(handle.read())["device_id"]
    gc.collect()
    from firmware import downlink

    node = downlink.Downlink(store, device_id, config_path, hal.time_ms)
    node.uplink_sent(rec["fcnt"], rec["end_ms"])
    reason = node.receive(unhexlify(rec["hex"]))
    gc.collect()
    print("knute: heap: %d bytes used, %d free after the apply" % (gc.mem_alloc(), gc.mem_free()))
    if reason is not None:
        print("knute: downlink dropped: %s" % reason)
    else:
        print("knute: downlink %d applied: report %s" % (node.last, node.entries))
        if node.clock_set:
            hal.clock_set = True
            hal.offset_ms = node.offset_ms
        if node.reboot:
            print("knute: resetting as the downlink asked")
            hal.reset()
    return reason
