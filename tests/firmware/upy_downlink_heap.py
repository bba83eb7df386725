# The heap a downlink costs a node, on the MicroPython unix port with the
# compiled modules a board holds (tests/firmware/test_downlink_heap.py runs it
# in a node folder at -X heapsize=64k). Prints one line per step:
#   <step> <bytes held afterwards> <bytes allocated during the step>
# "held" is what stays in use once collected (the modules' code and the
# Downlink object); "allocated" is counted with the collector off, an upper
# bound of the step's peak. Run in the folder: micropython heap.py

import gc
import sys

if "lib" not in sys.path:
    sys.path.insert(1, "lib")

from binascii import unhexlify

gc.collect()
base = gc.mem_alloc()


def step(name, fn):
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    result = fn()
    allocated = gc.mem_alloc() - before
    gc.enable()
    gc.collect()
    print(name, gc.mem_alloc() - base, allocated)
    return result


def load():
    from firmware import downlink_model

    return downlink_model


with open("frames.hex") as f:
    frames = [unhexlify(line.strip()) for line in f if line.strip()]
downlink = step("import", load)
from firmware.state import Store  # noqa: E402

store = Store("state")
node = step("build", lambda: downlink.Downlink(store, 0x1234, "config.json", None,
                                                "upd", "lib"))
for n, raw in enumerate(frames):
    result = step("receive%d" % n, lambda raw=raw: node.receive(raw))
    if result is not None:
        print("rejected", result)
print("report", node.report())
