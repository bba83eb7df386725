# Time-on-air reference figures, checked on CPython and on the MicroPython unix
# port (tests/tools/test_airtime.py runs this file on both and compares output).
#
# Sources of the expected values (all 125 kHz, CR 4/5, explicit header, CRC on,
# 8-symbol preamble, low data-rate optimisation automatic = SF11/12 only):
#  [FN]  /work/shared/FIELD-NOTES.md "Numbers to design by": 20 bytes take about
#        57 ms at SF7 and 1.32 s at SF12; each extra byte about 1.5 ms at SF7 and
#        33 ms at SF12.
#  [TTN] The Things Network's airtime spreadsheet, "Formulas taken from AN1200.13",
#        docs.google.com/spreadsheets/d/1eL1nHxMidIcIdDE_l-DoY3kmE2e8b0YpOBW64WnYxj8
#        (24-byte application payload + 13-byte LoRaWAN header = 37 bytes):
#        Tpacket SF7 82.176, SF8 143.872, SF9 267.264, SF10 493.568, SF11 1069.056,
#        SF12 1974.272 ms; Tsym SF7..SF12 1.024 .. 32.768 ms; payloadSymbNb
#        SF7..SF12 68, 58, 53, 48, 53, 48.
#  [SHEET] the original spreadsheet of that TTN forum thread,
#        docs.google.com/spreadsheets/d/1voGAtQAjC1qBmaVuP1ApNKs1ekgUjavHuVQIXyYSvNc
#        13 bytes at SF9, low DR optimise off: Tpreamble 50.176, payloadSymbNb 28,
#        Tpacket 164.864 ms; 1 % duty cycle -> 16.4864 s between starts.
#  [FORUM] thethingsnetwork.org/forum/t/spreadsheet-for-lora-airtime-calculation/1190
#        "an empty alive message ... would take 1.16 seconds on SF12, for just the
#        13 bytes of the LoRaWAN header".
import sys

sys.path.insert(0, ".")

from protocol import airtime

failures = 0


def check(name, got, want, tol):
    global failures
    ok = abs(got - want) <= tol
    if not ok:
        failures += 1
    print("%s %s got %.3f want %.3f" % ("ok  " if ok else "FAIL", name, got, want))


# [FN]
check("FN 20B SF7", airtime.time_on_air_ms(20, 7), 57, 0.5)
check("FN 20B SF12", airtime.time_on_air_ms(20, 12), 1320, 5)
check("FN +1B SF7 avg over 4 bytes",
      (airtime.time_on_air_ms(24, 7) - airtime.time_on_air_ms(20, 7)) / 4, 1.5, 0.3)
check("FN +1B SF12 avg over 10 bytes",
      (airtime.time_on_air_ms(30, 12) - airtime.time_on_air_ms(20, 12)) / 10, 33, 4)
# [TTN]
TTN = {7: 82.176, 8: 143.872, 9: 267.264, 10: 493.568, 11: 1069.056, 12: 1974.272}
TTN_SYMS = {7: 68, 8: 58, 9: 53, 10: 48, 11: 53, 12: 48}
for sf in range(7, 13):
    check("TTN 37B SF%d" % sf, airtime.time_on_air_ms(37, sf), TTN[sf], 0.0005)
    check("TTN 37B SF%d symbols" % sf, airtime.payload_symbols(37, sf), TTN_SYMS[sf], 0)
    check("TTN Tsym SF%d" % sf, airtime.symbol_time_ms(sf), 1.024 * (1 << (sf - 7)), 1e-9)
# [SHEET]
check("SHEET 13B SF9 no LDRO", airtime.time_on_air_ms(13, 9, ldro=False), 164.864, 0.0005)
check("SHEET 13B SF9 symbols", airtime.payload_symbols(13, 9, ldro=False), 28, 0)
check("SHEET 1% interval s", airtime.min_interval_s(164.864, 100), 16.4864, 1e-6)
# [FORUM]
check("FORUM 13B SF12", airtime.time_on_air_ms(13, 12), 1160, 10)
# Automatic LDRO exactly at SF11/12 on 125 kHz, never at 250 kHz SF11.
check("LDRO SF10", 1 if airtime.ldro_needed(10) else 0, 0, 0)
check("LDRO SF11", 1 if airtime.ldro_needed(11) else 0, 1, 0)
check("LDRO SF11 250k", 1 if airtime.ldro_needed(11, 250000) else 0, 0, 0)
# Duty cycle: 1 % of an hour is 36 s; 10 % 360 s; 0.1 % 3.6 s.
check("g1 budget", airtime.airtime_budget_ms(airtime.sub_band(868100000)[1]), 36000, 0)
check("g3 budget", airtime.airtime_budget_ms(airtime.band_limit("g3")), 360000, 0)
check("g2 budget", airtime.airtime_budget_ms(airtime.band_limit("g2")), 3600, 0)
check("20B SF12 per hour in g1", airtime.uplinks_per_hour(airtime.time_on_air_ms(20, 12), 100),
      27, 0)
print("failures", failures)
