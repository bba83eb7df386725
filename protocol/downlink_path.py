# Module paths a firmware bundle may carry (docs/protocol.md 12.10): checked
# by the gateway before it builds a bundle and by a node before it stages one.
# Apart from protocol.downlink so that a node loads its strings only while an
# update is staged (docs/firmware.md, "Memory").


def path_ok(path):
    """True for a module path a bundle may carry: firmware/ or protocol/, .py or .mpy."""
    if not isinstance(path, str) or len(path) < 1 or len(path) > 64:
        return False
    if not (path.startswith("firmware/") or path.startswith("protocol/")):
        return False
    if not (path.endswith(".py") or path.endswith(".mpy")):
        return False
    if ".." in path or "//" in path:
        return False
    return all("a" <= ch <= "z" or "0" <= ch <= "9" or ch in "_./" for ch in path)
