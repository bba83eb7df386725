# Encodes and encrypts one water-meter frame and reports the heap it took.
# Run with `micropython -X heapsize=32k tests/protocol/upy_heap.py` to show a
# frame fits a 32 KB heap. With the collector disabled nothing is freed, so
# the bytes allocated during one encode are an upper bound of its peak use.
# Prints: "<frame hex> <bytes allocated>".

import gc
import sys

sys.path.insert(0, ".")

from binascii import hexlify

from protocol import ccm, frame

KEY = b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f"
VALUES = {"index": 123456, "profile_end_h": 200, "alarms": 0, "battery": 17,
          "profile": [0, 2, 31, 45, 12, 8]}

block = ccm.aes_block(KEY)
frame.encode("water_meter", 0x1234, 6, VALUES, KEY, 4, block)  # warm up imports/caches
gc.collect()
gc.disable()
before = gc.mem_alloc()
raw = frame.encode("water_meter", 0x1234, 7, VALUES, KEY, 4, block)
used = gc.mem_alloc() - before
gc.enable()
print(hexlify(raw).decode(), used)
