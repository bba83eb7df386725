# The bench "board": the unix port has no pins; everything is wired by
# config.json "bench" (see firmware/hal/unix.py). Kept so that "board": "unix"
# names a real file like every other board.

PINS = {}
