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
step the LoRaWAN rule leaves to the node's own back-off (ADRACKReq): with the
power at its maximum, a negative step raises the SF, so a node that lost its
margin but is still heard is moved back into range at once. A node no receiver
hears backs off by itself (firmware.downlink_window, docs/radio.md).

Two guards of knute's, both off in ``decide`` by default (the bare rule) and on
in the gateway (``[downlinks] adr_hysteresis_db``, ``adr_max_steps``):

- hysteresis: steps that spend margin (lower SF, lower power) count only the
  margin above ``hysteresis_db``, so a node moved down sits that far above the
  bottom of the rule's 3 dB dead band and SNR noise does not send it back up
  at the next decision; steps that restore margin start as soon as the margin
  is below zero, so a decision never leaves a node below floor + installation
  margin by the SNR it measured;
- bounded steps: at most ``max_steps`` margin-spending steps per decision, so
  one optimistic history moves a node by at most that many 2.5 dB (SF) or 2 dB
  (power) steps; the next step needs a fresh history at the new settings.

Each margin-spending step costs at most 2.5 dB of link budget for 3 dB of
margin, so the expected margin after a decision (``margin_after_db``) is never
below the hysteresis, and so never below zero.

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
    fallback: bool = False   # back to the settings before a change the node was lost after


def margin_after_db(decision: AdrDecision, sf: int, power_dbm: int) -> float:
    """The margin the node is expected to have at the decision's settings: its margin
    now less 2.5 dB per SF lowered and the power lowered (plus what is raised)."""
    return (decision.margin_db
            - (SNR_FLOOR_DB[decision.sf] - SNR_FLOOR_DB[sf])
            - (power_dbm - decision.power_dbm))


def margin_db(best_snr_db: float, sf: int,
              installation_margin_db: float = INSTALLATION_MARGIN_DB) -> float:
    """The link margin of the rule: best SNR - the SF's demodulation floor - the margin."""
    if sf not in SNR_FLOOR_DB:
        raise ValueError(f"SF {sf} is outside {SF_MIN}..{SF_MAX}")
    return best_snr_db - SNR_FLOOR_DB[sf] - installation_margin_db


def decide(snr_db: Sequence[float], sf: int, power_dbm: int, *,
           installation_margin_db: float = INSTALLATION_MARGIN_DB,
           history: int = HISTORY, power_min_dbm: int = POWER_MIN_DBM,
           power_max_dbm: int = POWER_MAX_DBM, hysteresis_db: float = 0.0,
           max_steps: int | None = None) -> AdrDecision | None:
    """The SF and power for a node whose last uplinks arrived with ``snr_db``.

    ``snr_db``: per uplink, the best SNR any receiver reported, oldest first;
    only the last ``history`` count. None while fewer than ``history`` are known.
    ``hysteresis_db`` and ``max_steps``: knute's guards (the module's docstring).
    """
    if not power_min_dbm <= power_dbm <= power_max_dbm:
        raise ValueError(f"power {power_dbm} dBm is outside {power_min_dbm}..{power_max_dbm}")
    recent = list(snr_db)[-history:]
    if len(recent) < history:
        return None
    margin = margin_db(max(recent), sf, installation_margin_db)
    steps = math.floor(margin / STEP_DB)
    left = steps
    if steps > 0:
        left = max(0, math.floor((margin - hysteresis_db) / STEP_DB))
        if max_steps is not None:
            left = min(left, max_steps)
    new_sf, new_power = sf, power_dbm
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
