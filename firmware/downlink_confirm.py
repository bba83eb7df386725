# The first completed send since boot on a node whose modules came by an
# update: the running module set is kept (docs/protocol.md 12.10). What
# firmware.downlink_update.confirm does, in a few lines, as that module does
# not fit beside a running role. Loaded by firmware.downlink_window only when
# upd/manifest.json exists, and dropped with it.

def confirm(ctx):
    """Mark the running module set confirmed (upd/manifest.json), once."""
    import json
    import os

    path = "upd/manifest.json"
    try:
        with open(path) as handle:
            manifest = json.loads(handle.read())
    except (OSError, ValueError):
        return                      # never updated: nothing to confirm
    if not isinstance(manifest, dict) or manifest.get("confirmed"):
        return
    manifest["confirmed"] = True
    with open(path + ".tmp", "w") as handle:   # as downlink_files.write_atomic
        handle.write(json.dumps(manifest))
    os.rename(path + ".tmp", path)
    ctx.log("module update confirmed: it completed a send")
