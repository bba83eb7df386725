# Copied to the board as /main.py (and used as main.py in a bench "flash"
# directory on the unix port). Everything else lives in lib/, which goes
# right after the script's own directory in sys.path (on the unix port a
# later "/lib" would be the host's /lib, which has a "firmware" directory).
import sys

if "lib" not in sys.path:
    sys.path.insert(1, "lib")

from firmware import app

hal = app.main()
if hal is not None:
    # A module update became active, or a downlink waits: firmware.downlink_apply.
    del app
    from firmware import downlink_apply

    downlink_apply.lives(hal)
