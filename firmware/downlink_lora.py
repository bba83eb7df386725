# The receive windows of a LoRa node (docs/protocol.md 12.6), loaded by
# firmware.downlink_window after an uplink and dropped again after it.

try:
    from micropython import const
except ImportError:  # CPython (type checks, host tools): const(x) is x
    const = int

from firmware.downlink_window import window_ms

_RX1_DELAY_MS = const(1000)     # LoRaWAN RECEIVE_DELAY1, RECEIVE_DELAY2
_RX2_DELAY_MS = const(2000)
_RX2_FREQ_HZ = const(869525000)  # RP002-1.0.4 section 2.4: EU868 RX2 default
_RX2_SF = const(12)
_RX_MS = const(2)               # position in Context.dl


def windows(ctx, end_ms):
    """The packet heard in RX1 or RX2 after an uplink that ended at board time `end_ms`."""
    link = ctx.link
    hal = ctx.hal
    for delay, freq, sf in ((_RX1_DELAY_MS, link.freq_hz, link.sf),
                            (_RX2_DELAY_MS, _RX2_FREQ_HZ, _RX2_SF)):
        open_ms = end_ms + delay
        wait = open_ms - hal.time_ms()
        if wait > 0:
            hal.sleep_ms(wait)
        win = window_ms(sf, link.bw_hz)
        ctx.dl[_RX_MS] += win
        packet = lora_window(link, open_ms, freq, sf, win)
        if packet is not None:
            ctx.dl[_RX_MS] += int(link.time_on_air_ms(len(packet), sf))
            return packet
    return None


def lora_window(link, open_ms, freq_hz, sf, win_ms):
    """One receive window on a LoRa modem opening now (board time `open_ms`)."""
    modem = link.modem
    if hasattr(modem, "rx_path"):       # the bench radio: TX lines in a file
        from firmware.hal import unix_bench_rx

        return unix_bench_rx.window(modem, open_ms, freq_hz, sf, win_ms)
    # A board's SyncModem: the window's channel and SF, a preamble's time plus
    # the longest downlink's time on air, then back to the uplink's settings.
    try:
        modem.configure({"freq_khz": freq_hz // 1000, "sf": sf})
        return modem.recv(win_ms + int(link.time_on_air_ms(222, sf)) + 1)
    except OSError:
        link.errors += 1
        return None
    finally:
        try:
            modem.configure({"freq_khz": link.freq_hz // 1000, "sf": link.sf})
        except OSError:
            link.errors += 1


