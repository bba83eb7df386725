# Run by tests/firmware/test_mqttsub_heap.py on the unix port, in the node's
# directory (lib/ holds the compiled modules): a display node's MQTT client
# receives a retained PUBLISH from a scripted broker on a fragmented heap.
#
# The client is built first (its buffers are allocated at boot, as on the
# node); then the heap is filled with 192-byte blocks and every other one
# freed, so plenty of small blocks are free but no run of 512 bytes is. A
# client that allocates its receive buffer per read cannot take the PUBLISH
# off the socket then; one that reads into its boot-time buffer can.
#
# Prints "up" once subscribed, then one line per result: "fragmented 1" (no
# 512-byte block was free while the client read), "got <payload>" or "error
# <exception>", "messages <n>".

import gc
import sys
import time

sys.path.insert(0, "lib")

from firmware.drivers import mqttsub

PORT = int(sys.argv[1])
TOPIC = "knute/air/index/area/sentrum"
got = []


def on_message(topic, payload):
    got.append(bytes(payload))


client = mqttsub.Subscriber("127.0.0.1", PORT, "display-heap", TOPIC, on_message,
                            time.ticks_diff, lambda n: 0, max_packet=1024)
# Connected and subscribed before the heap is squeezed: the connection's own
# objects (socket, poller) belong to the boot.
deadline = time.ticks_add(time.ticks_ms(), 10000)
while client.state != mqttsub.UP and time.ticks_diff(deadline, time.ticks_ms()) > 0:
    client.step(time.ticks_ms())
    time.sleep_ms(1)

# The test has the broker send a retained PUBLISH now and answers on stdin once
# it is on its way, so that the first read below takes it.
print("up")
sys.stdin.readline()


def squeeze():
    """Fill the heap with 192-byte blocks and free every other one (locals only: a new
    global would grow the module's dict on a full heap)."""
    blocks = [None] * 1000        # never grown: a list growing would free its old array
    n = 0
    try:
        while n < len(blocks):
            blocks[n] = bytearray(192)
            n += 1
    except MemoryError:
        pass
    for i in range(1, n, 2):
        blocks[i] = None
    gc.collect()
    return blocks


def read_squeezed():
    """(fragmented, error, blocks) after stepping the client on the squeezed heap."""
    blocks = squeeze()
    fragmented = 1
    try:
        bytearray(512)
        fragmented = 0
    except MemoryError:
        pass
    error = None
    try:
        for _ in range(50):
            client.step(time.ticks_ms())
            if got:
                break
            time.sleep_ms(20)
    except MemoryError as exc:
        error = exc
    # The blocks stay referenced until here: collected earlier, they would leave the
    # large free run the test takes away.
    kept = 0
    for block in blocks:
        if block is not None:
            kept += 1
    return fragmented, error, kept


gc.collect()
fragmented, error, kept = read_squeezed()
gc.collect()
print("fragmented", fragmented)
print("kept", kept)
if got:
    print("got", got[0].decode())
else:
    print("error", repr(error))
print("messages", client.messages)
