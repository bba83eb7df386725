# Node roles. Each module defines `Node`:
#
#   class Node:
#       def __init__(self, ctx): ...  # ctx: firmware.context.Context
#       def start(self): ...          # open inputs and sensors, restore state
#       def poll(self, now_ms): ...   # do what is due; return ms until it wants to run again
#       def status(self): ...         # optional: a dict for the console
#
# config.json "role" picks one; the app imports only that module, so a node
# carries the RAM cost of its own role only.

ROLE_NAMES = ("water_meter", "air_quality", "radio_bridge", "display")


def load(name):
    """The module of role `name`; ImportError when it is not installed."""
    if name == "water_meter":
        from firmware.roles import water_meter as module
    elif name == "air_quality":
        from firmware.roles import air_quality as module
    elif name == "radio_bridge":
        from firmware.roles import radio_bridge as module
    elif name == "display":
        from firmware.roles import display as module
    else:
        raise ImportError("no role " + str(name))
    return module
