# Power cuts during a downlink's apply, on the unix port
# (tests/firmware/test_downlink_cuts.py kills this process at random moments).
#
#   micropython upy_downlink_cut.py apply   reads frames.hex (one downlink a line) and
#                                           applies them, 3 ms pauses between steps
#   micropython upy_downlink_cut.py check   what the node has after the boot that follows
#
# Run in the node's folder (config.json, state/, lib/ with the compiled
# protocol/ and firmware/ and the probe modules firmware/probe_a.py and
# protocol/probe_b.py, upd/), as main.py runs on a board.

import json
import sys
import time
from binascii import unhexlify

if "lib" not in sys.path:
    sys.path.insert(1, "lib")


def pause(name):
    time.sleep_ms(3)


def apply():
    from firmware.downlink_model import Downlink
    from firmware.state import Store

    with open("config.json") as f:
        device_id = json.loads(f.read())["device_id"]
    store = Store("state", pause=pause)
    node = Downlink(store, device_id, "config.json", None, "upd", "lib", pause)
    with open("frames.hex") as f:
        frames = [unhexlify(line.strip()) for line in f if line.strip()]
    print("ready")
    for raw in frames:
        reason = node.receive(raw)
        if reason is not None:
            print("rejected", reason)
    print("done", node.entries)


def check():
    # What a boot sees: the module set the boot hook picks, then the state.
    from firmware import downlink_update

    folder, rolled = downlink_update.boot_hook("upd")
    from firmware.state import Store

    store = Store("state")
    with open("config.json") as f:
        cfg = json.loads(f.read())
    if folder is not None:
        downlink_update.activate(folder, "lib")
    from firmware import probe_a
    from protocol import probe_b

    versions = [probe_a.VERSION, probe_b.VERSION]
    print(json.dumps({"water": cfg.get("water"), "key": cfg.get("key"),
                      "key_next": cfg.get("key_next"), "key_no": cfg.get("key_no", 0),
                      "dcnt": store.get("dcnt"), "modules": versions,
                      "active": folder, "rolled_back": rolled}))


if sys.argv[1] == "apply":
    apply()
else:
    check()
