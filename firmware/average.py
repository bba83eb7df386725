# Trimmed means over a send interval, kept as a running sum, count, minimum
# and maximum: constant memory however many samples arrive, no allocation per
# sample. As Sensor.Community's airrohr firmware does, the smallest and the
# largest sample are dropped before averaging once there are at least three,
# so one spike (an insect in the fan, a bad frame that passed its checksum)
# does not move the mean.


def div_round(num, den):
    """num / den rounded to the nearest integer, halves upwards (den > 0).

    Floor division makes it right for negative numerators too.
    """
    return (2 * num + den) // (2 * den)


class TrimmedMean:
    def __init__(self):
        self.count = 0
        self.total = 0
        self.low = 0
        self.high = 0

    def reset(self):
        """Forget every sample."""
        self.count = 0
        self.total = 0
        self.low = 0
        self.high = 0

    def add(self, value):
        """Add one integer sample."""
        if self.count == 0:
            self.low = value
            self.high = value
        elif value < self.low:
            self.low = value
        elif value > self.high:
            self.high = value
        self.total += value
        self.count += 1

    def mean(self, div=1):
        """The mean without the minimum and maximum, divided by `div` and rounded.

        None without samples; with one or two samples nothing is dropped.
        Dividing here (0.01 degC samples, 0.1 degC result) rounds only once.
        """
        n = self.count
        if n == 0:
            return None
        if n < 3:
            return div_round(self.total, n * div)
        return div_round(self.total - self.low - self.high, (n - 2) * div)
