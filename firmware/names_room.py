# Room for the names' table step, held at the top of the heap from the boot
# until the first send (docs/firmware.md, "The downlink path's heap").
#
# MicroPython interns every name a module brings (qstrs) in a table that grows
# by doubling, and the step to a 640-entry table, at the 620th name, is one
# block of 640 * (word + 3) bytes: 4.5 KB on a board, 7 KB on the 64-bit unix
# port. An air node with downlinks takes that step on the first send after a
# reset, when the downlink modules' names come in, and by then the boot has cut
# the heap into holes too small for it however much is free. So its boot takes
# that block (and a little more) at the top of the heap while the top is free:
# a filler list takes the free space below first and is given back at once.
# Context.send frees it right before it loads those modules; what else comes
# in before the step is small and goes into the holes below, so the table lands
# there. A list, not a bytearray: list.clear() gives its items back at once,
# where a dropped object waits for a collection that a stale pointer on the
# stack can hold off. Loaded by firmware.boot only for such a node, dropped
# again right after.

import gc
from struct import calcsize


def take():
    """A list whose items fill the room (list.clear() frees it), or None when no room."""
    word = calcsize("P")
    size = 640 * (word + 3) // word + 64    # the table's bytes, and 64 words to spare
    gc.collect()
    below = (gc.mem_free() - 256) // word - size
    while below > 0:
        try:
            fill = [0] * below
        except MemoryError:             # the free space is not in one piece
            below -= 32
            continue
        try:
            room = [0] * size
        except MemoryError:
            room = None
        fill.clear()
        if room is not None:
            return room
        below -= 32
    return None
