# LoRa time on air and the EU868 duty-cycle budget.
#
# Time on air follows Semtech's formula (SX1276/77/78/79 datasheet rev. 7,
# section 4.1.1.7 "Time on air"; LoRa Modem Designer's Guide AN1200.13):
#
#   T_sym      = 2^SF / BW
#   T_preamble = (n_preamble + 4.25) * T_sym
#   n_payload  = 8 + max(ceil((8*PL - 4*SF + 28 + 16*CRC - 20*IH) / (4*(SF - 2*DE))) * (CR + 4), 0)
#   T_packet   = T_preamble + n_payload * T_sym
#
# PL is the PHY payload in bytes, IH = 1 for implicit header, CRC = 1 when the
# payload CRC is on, CR = 1..4 for coding rates 4/5..4/8 and DE = 1 when low
# data-rate optimisation is on. The datasheet asks for DE whenever a symbol
# lasts 16 ms or more, which at 125 kHz means SF11 and SF12 (LoRaWAN stacks
# switch it on exactly there).
#
# Duty cycle: ETSI EN 300 220-2 V3.2.1 (and ERC Recommendation 70-03 annex 1)
# split 863-870 MHz into sub-bands with their own limit on the share of time a
# device transmits, measured over one hour. The names are ERC 70-03's, the
# same as firmware/dutycycle.py.
#
# Pure integer/float arithmetic, no imports: runs unchanged on MicroPython.
# The planning helpers are in protocol.airtime_plan (see __getattr__ below).

# (name, low Hz, high Hz, limit in 1/10000 of the time)
SUB_BANDS = (
    ("h1.3", 863000000, 865000000, 10),     # 0.1 %  (EN 300 220-2 band K)
    ("h1.4", 865000000, 868000000, 100),    # 1 %    (band L)
    ("g1", 868000000, 868600000, 100),      # 1 %    (band M: LoRaWAN default channels)
    ("g2", 868700000, 869200000, 10),       # 0.1 %  (band N)
    ("g3", 869400000, 869650000, 1000),     # 10 %   (band P, up to 500 mW)
    ("g4", 869700000, 870000000, 100),      # 1 %    (band Q)
)

HOUR_MS = 3600000


def ldro_needed(sf, bw_hz=125000):
    """True when low data-rate optimisation is mandatory (symbol time >= 16 ms)."""
    return (1 << sf) * 1000 >= 16 * bw_hz


def payload_symbols(payload_len, sf, bw_hz=125000, cr=5, explicit_header=True, crc=True,
                    ldro=None):
    """Number of payload symbols (datasheet 4.1.1.7), header symbols included."""
    if sf < 6 or sf > 12:
        raise ValueError("spreading factor must be 6..12")
    if cr < 5 or cr > 8:
        raise ValueError("coding rate must be 5..8 (4/5..4/8)")
    if payload_len < 0 or payload_len > 255:
        raise ValueError("payload length must be 0..255")
    if ldro is None:
        ldro = ldro_needed(sf, bw_hz)
    de = 1 if ldro else 0
    ih = 0 if explicit_header else 1
    num = 8 * payload_len - 4 * sf + 28 + (16 if crc else 0) - 20 * ih
    den = 4 * (sf - 2 * de)
    blocks = -(-num // den)         # integer ceil
    if blocks < 0:
        blocks = 0
    return 8 + blocks * cr


def time_on_air_ms(payload_len, sf, bw_hz=125000, cr=5, preamble=8,
                   explicit_header=True, crc=True, ldro=None):
    """LoRa time on air in ms of a PHY payload of `payload_len` bytes.

    cr is the coding-rate denominator (5 = 4/5 .. 8 = 4/8); ldro None means
    automatic (on when a symbol lasts 16 ms or more: SF11/12 at 125 kHz).
    """
    n_sym = payload_symbols(payload_len, sf, bw_hz, cr, explicit_header, crc, ldro)
    # Preamble: programmed length + 4.25 symbols (sync word and start of frame).
    # Counted in quarter symbols to stay exact in integers until the last step.
    quarters = (preamble * 4 + 17) + n_sym * 4
    return quarters * (1 << sf) * 1000 / (4 * bw_hz)


def sub_band(freq_hz, bw_hz=125000):
    """(name, limit_per_10000) of the EU868 sub-band that holds the whole channel."""
    lo = freq_hz - bw_hz // 2
    hi = freq_hz + bw_hz // 2
    for name, band_lo, band_hi, limit in SUB_BANDS:
        if lo >= band_lo and hi <= band_hi:
            return name, limit
    raise ValueError("channel %d Hz (bw %d) is not inside one EU868 sub-band" % (freq_hz, bw_hz))


def __getattr__(name):
    # symbol_time_ms, band_limit, airtime_budget_ms, uplinks_per_hour and
    # min_interval_s are for planning tools (`knute airtime`); they live in
    # protocol.airtime_plan, imported on first use, so a LoRa node does not
    # carry them.
    from . import airtime_plan

    value = getattr(airtime_plan, name)
    globals()[name] = value
    return value
