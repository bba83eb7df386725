# What a technician runs to read a node without starting it:
#
#   mpremote exec "from firmware import status; status.show()"     (a board)
#   micropython -c "import sys; sys.path.insert(1, 'lib');
#                   from firmware import status; status.show()"     (a bench flash directory)
#
# It prints the checked config (or why it is invalid) and every state file.
#
# It also holds the node's safe-mode report: safe_mode() writes the reason to
# state/safe_mode.json before the HAL's safe mode, so `knute provision --check`
# can say why a node does not run after the console has scrolled away (a
# board's safe mode ends in deep sleep). The next boot that gets past the
# boot-loop guard removes the file. Only a node going into safe mode loads
# this module.


def safe_mode(hal, reason):
    """Write the safe-mode report, then enter the HAL's safe mode (it does not return
    on a board; on the bench it ends the process with status 3)."""
    from firmware import state

    try:
        state.Store("state").put("safe_mode", {"reason": reason, "reset": hal.reset_cause()})
    except OSError:
        pass                # a flash that cannot be written: the console still says why
    hal.safe_mode(reason)


def show(config_path="config.json"):
    """Print config and saved state without starting the node (mpremote exec / bench)."""
    import json
    import os

    from firmware import config

    try:
        cfg = config.load(config_path)
        print("config: role=%s device=%08x kind=%s board=%s link=%s"
              % (cfg["role"], cfg["device_id"], cfg["kind"], cfg["board"], cfg["link"]["type"]))
    except config.ConfigError as exc:
        print("config: INVALID: " + str(exc))
    try:
        names = os.listdir("state")
    except OSError:
        names = []
    for name in sorted(names):
        try:
            with open("state/" + name) as handle:
                print("state/%s: %s" % (name, json.dumps(json.loads(handle.read()))))
        except (OSError, ValueError):
            print("state/%s: unreadable" % name)
