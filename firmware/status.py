# What a technician runs to read a node without starting it:
#
#   mpremote exec "from firmware import status; status.show()"     (a board)
#   micropython -c "import sys; sys.path.insert(1, 'lib');
#                   from firmware import status; status.show()"     (a bench flash directory)
#
# It prints the checked config (or why it is invalid) and every state file.


def show(config_path="config.json"):
    """Print config and saved state without starting the node (mpremote exec / bench)."""
    import json
    import os

    from firmware import config

    try:
        cfg = config.load(config_path)
        print("config: role=%s device=%d kind=%s board=%s link=%s"
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
