# Copied to the board as /main.py (and used as main.py in a bench "flash"
# directory on the unix port). Everything else lives in lib/, which goes
# right after the script's own directory in sys.path (on the unix port a
# later "/lib" would be the host's /lib, which has a "firmware" directory).
import sys

if "lib" not in sys.path:
    sys.path.insert(1, "lib")

from firmware import app

if app.main():
    # A module update is active (firmware.downlink_update.hook): its own app runs.
    from firmware import app

    app.main("config.json", False)
