# The data-rate back-off's record (firmware.downlink_window), written by the
# apply of a downlink that set radio.sf or radio.power_dbm. Apart from
# firmware.downlink, whose code every apply loads: only LoRa nodes that the
# gateway's data-rate rule moves need this.


def note(store, was, radio, last):
    """Record the radio settings downlink `last` set; `was`: [sf, dbm] before it.

    The back-off steps back toward the provisioned settings: those before the
    first such change since config.json was provisioned (a record whose "set"
    values are not `was` is from before a new provisioning).
    """
    rec = store.get("adr")
    if not isinstance(rec, list) or len(rec) != 8 or rec[2:4] != was:
        rec = was
    now = [radio.get("sf", 9), radio.get("power_dbm", 14)]
    store.put("adr", rec[:2] + now + now + [0, last])
