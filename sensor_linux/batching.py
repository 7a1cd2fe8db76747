"""How long the live sources let events gather between reads, and the flag they wait on.

Without a pause every exec wakes the sensor (a ring buffer wake-up, several netlink datagrams,
a pipe write by auditd), and each wake-up costs a system call round trip and a pass through the
loop. Waiting 20 ms after each drain turns thousands of wake-ups a second into fifty. The
buffers in between are far larger than 20 ms of events at any exec rate this host can reach:
the BPF ring buffer (4 MiB by default), the netlink socket (16 MiB), the plugin pipe (1 MiB,
enlarged at start). The overhead lab (``ttpsensor bench overhead``) measures the effect.
Larger batches cost less per event still: the eBPF sources read their ring every 100 ms unless
it is filling or an image with no link was exec'd (``RingInput`` in
``sensor_linux/ebpf/source.py``). The audit sources keep 20 ms: their live facts (the image
through ``/proc/PID/exe``, the container) race the process's exit, and audit gives no early
signal. Under a 300 execs/s load, memfd images living 40 ms were hashed 20 of 20 times at
20 ms and 8-9 of 20 at 100 ms, which had saved a tenth of the netlink sensor's CPU. The
plugin's pipe read every 100 ms gained nothing measurable.
"""

import time
from typing import Callable, Protocol

BATCH_SECONDS = 0.02
GATHER_SECONDS = 0.1
# How full a buffer may be before a gathering input reads it early: at the ring's 4 MiB,
# 256 KiB, with the rest free for the loop's next turn.
EARLY_FILL = 1 / 16


class Gather:
    """When a buffer that the loop looks at every turn is worth reading: once ``seconds``
    have passed since the last read, or at once when it is :data:`EARLY_FILL` full (or its
    fill cannot be told). Reading less often costs less per event (the eBPF source at 1000
    execs/s: 71-76 µs per exec reading every 20 ms, 46-58 every 100 ms); the fill check
    keeps a burst from filling the buffer meanwhile."""

    def __init__(self, seconds: float = GATHER_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds = seconds
        self.clock = clock
        self._last_read = clock()

    def due(self, fill: Callable[[], float | None]) -> bool:
        """Whether to read now; ``fill`` tells how full the buffer is (0 to 1), or None."""
        if self.seconds and self.clock() - self._last_read < self.seconds:
            level = fill()
            if level is not None and level < EARLY_FILL:
                return False
        return True

    def read(self) -> None:
        """Say the buffer is being read now."""
        self._last_read = self.clock()


class StopFlag(Protocol):
    """What the read loops wait on between batches (set by SIGTERM/SIGINT)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float) -> bool: ...
