"""The data-rate rule: a node's SF and transmit power from the SNR its uplinks arrive with.

Pure: the downlink queue calls ``decide`` with the best SNR that any receiver
saw of each of the node's last uplinks and sends the result as the node's
``radio.sf`` / ``radio.power_dbm`` (config codes of docs/protocol.md) when it
differs from what the node uses.

The rule is Semtech's recommended one for LoRaWAN network servers (Semtech,
"LoRaWAN - simple rate adaptation recommended algorithm", rev. 1.0, 2016), as
ChirpStack and The Things Network run it:

    margin = max(SNR over the last N uplinks) - floor(SF) - installation margin
    steps  = floor(margin / 3 dB)

each positive step first lowers the SF by one (down to SF7), then lowers the
power by one 2 dB step of the EU868 power table (down to the minimum); each
negative step raises the power first (up to the maximum). knute adds one
step the LoRaWAN rule leaves to the node's own back-off (ADRACKReq, which
knute nodes do not have): with the power at its maximum, a negative step
raises the SF, so a node that lost its margin is moved back into range.

The demodulation floors are the SX1276 datasheet's (rev. 7, table 13): SF7
-7.5 dB ... SF12 -20 dB, 2.5 dB a step. The installation margin defaults to
10 dB, ChirpStack's default (``installation_margin``); N to 20 uplinks, the
history both network servers keep. A decision needs N uplinks: fewer say
nothing, so a newly provisioned node keeps the SF its link check gave it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

SNR_FLOOR_DB = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
STEP_DB = 3.0                # margin per step (Semtech's rule)
POWER_STEP_DB = 2            # EU868 TXPower table: max EIRP - 2 dB × index
INSTALLATION_MARGIN_DB = 10.0
HISTORY = 20
SF_MIN, SF_MAX = 7, 12
POWER_MIN_DBM, POWER_MAX_DBM = 2, 14


@dataclass(frozen=True)
class AdrDecision:
    """What a node should use next, and why."""

    sf: int
    power_dbm: int
    margin_db: float         # best SNR - floor(current SF) - installation margin
    steps: int               # whole 3 dB steps of that margin (negative: short of it)
    changed: bool


def margin_db(best_snr_db: float, sf: int,
              installation_margin_db: float = INSTALLATION_MARGIN_DB) -> float:
    """The link margin of the rule: best SNR - the SF's demodulation floor - the margin."""
    if sf not in SNR_FLOOR_DB:
        raise ValueError(f"SF {sf} is outside {SF_MIN}..{SF_MAX}")
    return best_snr_db - SNR_FLOOR_DB[sf] - installation_margin_db


def decide(snr_db: Sequence[float], sf: int, power_dbm: int, *,
           installation_margin_db: float = INSTALLATION_MARGIN_DB,
           history: int = HISTORY, power_min_dbm: int = POWER_MIN_DBM,
           power_max_dbm: int = POWER_MAX_DBM) -> AdrDecision | None:
    """The SF and power for a node whose last uplinks arrived with ``snr_db``.

    ``snr_db``: per uplink, the best SNR any receiver reported, oldest first;
    only the last ``history`` count. None while fewer than ``history`` are known.
    """
    if not power_min_dbm <= power_dbm <= power_max_dbm:
        raise ValueError(f"power {power_dbm} dBm is outside {power_min_dbm}..{power_max_dbm}")
    recent = list(snr_db)[-history:]
    if len(recent) < history:
        return None
    margin = margin_db(max(recent), sf, installation_margin_db)
    steps = math.floor(margin / STEP_DB)
    new_sf, new_power, left = sf, power_dbm, steps
    while left > 0 and new_sf > SF_MIN:
        new_sf -= 1
        left -= 1
    while left > 0 and new_power - POWER_STEP_DB >= power_min_dbm:
        new_power -= POWER_STEP_DB
        left -= 1
    while left < 0 and new_power + POWER_STEP_DB <= power_max_dbm:
        new_power += POWER_STEP_DB
        left += 1
    while left < 0 and new_sf < SF_MAX:
        new_sf += 1
        left += 1
    return AdrDecision(new_sf, new_power, round(margin, 2), steps,
                       (new_sf, new_power) != (sf, power_dbm))


class AdrHistory:
    """Per device: the best SNR of its last uplinks and the settings it was last given.

    No I/O: the downlink worker calls ``observe`` for every uplink and queues the
    config command when a decision changes something; ``sent`` then starts a fresh
    history, so the next decision rests on uplinks at the new settings.
    """

    def __init__(self, *, installation_margin_db: float = INSTALLATION_MARGIN_DB,
                 history: int = HISTORY, power_dbm: int = POWER_MAX_DBM) -> None:
        self.installation_margin_db = installation_margin_db
        self.history = history
        self.default_power_dbm = power_dbm      # what a node runs before ADR sets it
        self._snr: dict[int, list[float]] = {}
        self._power: dict[int, int] = {}

    def observe(self, device_id: int, best_snr_db: float | None,
                sf: int | None) -> AdrDecision | None:
        """Note one uplink; the decision when the rule changes the node's settings."""
        if best_snr_db is None or sf not in SNR_FLOOR_DB:
            return None
        snrs = self._snr.setdefault(device_id, [])
        snrs.append(float(best_snr_db))
        del snrs[:-self.history]
        power = self._power.get(device_id, self.default_power_dbm)
        got = decide(snrs, sf, power, installation_margin_db=self.installation_margin_db,
                     history=self.history)
        return got if got is not None and got.changed else None

    def sent(self, device_id: int, decision: AdrDecision) -> None:
        """The decision went into the queue: remember its power, start a new history."""
        self._power[device_id] = decision.power_dbm
        self._snr.pop(device_id, None)
