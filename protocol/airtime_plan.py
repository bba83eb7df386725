# Duty-cycle planning helpers of protocol.airtime for the tools (`knute
# airtime`), kept apart so that a LoRa node, which needs only the sub-band
# table and the time-on-air formula, does not carry them. Reached as
# airtime.band_limit etc. (protocol.airtime imports this module on first use).

from .airtime import HOUR_MS, SUB_BANDS


def symbol_time_ms(sf, bw_hz=125000):
    """Duration of one LoRa symbol in ms: 2^SF / BW."""
    return (1 << sf) * 1000 / bw_hz


def band_limit(name):
    """Duty-cycle limit of a sub-band by name, in 1/10000 of the time."""
    for band in SUB_BANDS:
        if band[0] == name:
            return band[3]
    raise ValueError("no EU868 sub-band " + str(name))


def airtime_budget_ms(limit_per_10000, window_ms=HOUR_MS):
    """Transmit time allowed in `window_ms` at a duty-cycle limit (1/10000 units)."""
    return window_ms * limit_per_10000 // 10000


def uplinks_per_hour(toa_ms, limit_per_10000):
    """Whole transmissions of `toa_ms` each that fit in one hour at the limit."""
    if toa_ms <= 0:
        raise ValueError("time on air must be positive")
    return int(airtime_budget_ms(limit_per_10000) // toa_ms)


def min_interval_s(toa_ms, limit_per_10000):
    """Shortest average spacing between sends that stays within the limit, in s."""
    return toa_ms * 10000 / limit_per_10000 / 1000
