"""How long the live sources let events gather between reads, and the flag they wait on.

Without a pause every exec wakes the sensor (a ring buffer wake-up, several netlink datagrams,
a socket write by auditd), and each wake-up costs a system call round trip and a pass through the
loop. Waiting 20 ms after each drain turns thousands of wake-ups a second into fifty. The
buffers in between are far larger than 20 ms of events at any exec rate this host can reach
(the BPF ring buffer, 4 MiB by default; the netlink socket, 16 MiB), but for one: auditd's
socket to its plugins holds some 26 of the lab's execs (a few hundred writes), about 26 ms at
1000 execs/s, so the plugin also reads between the chunks of a build (``capture.CHUNK_LINES``)
and pauses less when more would come meanwhile (:class:`Pacing`). The overhead lab
(``ttpsensor bench overhead``) measures the effect.
Larger batches cost less per event still: the eBPF sources read their ring every 200 ms, and
the loop sleeps in between unless the probes wake it (an image with no link exec'd, the ring
filling: ``RingInput`` in ``sensor_linux/ebpf/source.py``, docs/ebpf.md). Each read costs
about half a millisecond beyond its events: at 500 execs/s the eBPF sensor spent 51-52 µs per
exec reading every 100 ms, 41-43 every 200 ms, 40 every 300 ms (at 1000/s: 41/41, 37/40).
The audit sources keep 20 ms: their live facts (the image through ``/proc/PID/exe``, the
container) race the process's exit, and audit gives no early signal. Under a 300 execs/s
load, memfd images living 40 ms were hashed 20 of 20 times at 20 ms and 8-9 of 20 at 100 ms,
which had saved a tenth of the netlink sensor's CPU. The plugin's pipe read every 100 ms
gained nothing measurable. Why a read costs so much beyond its events on shared VMs (the work
after a pause runs slower, whoever's it is): ``ttpsensor bench wake``, docs/overhead.md.
So the audit sources split the work: at every read (20 ms) each exec's SYSCALL record is
recognized from its text and what only the live process shows is read at once (its image
link, container, the image itself when it has no path, an unknown parent); the records are
parsed and the events built every 500 ms (``BUILD_SECONDS``), in batches 25 times larger
(sensor_linux/audit/capture.py). A build after a pause pays to bring its code and tables back
into the caches, whatever its size, so fewer builds pay it less often: in six lab runs
alternating 100 and 500 ms, the plugin's ratio to LAUREL (both behind auditd) fell in every
pair, 1.03-1.15x to 0.88-1.11x, and the netlink sensor's with it (docs/overhead.md, tenth
session). A second brought nothing more in ``ttpsensor bench plugin``. Events wait no longer
to be seen than they did at a low rate: the output is flushed at each tick (1 s), which builds
what waits.
"""

import time
from typing import Callable, Protocol

BATCH_SECONDS = 0.02
GATHER_SECONDS = 0.2
# The audit sources build the events they read every BUILD_SECONDS, having read what only a live
# process shows at every read (sensor_linux/audit/capture.py).
BUILD_SECONDS = 0.5
# How full the ring may be before the probes wake their reader early: at its 4 MiB,
# 256 KiB, with the rest free while the reader comes.
EARLY_FILL = 1 / 16


class Gather:
    """When a gathering input is due: ``seconds`` after it was last read. Reading less often
    costs less per event (see above). What must not wait is signalled by the buffer itself (the
    exec probes wake their reader, ``execsnoop.c``: ``wake_flags``), which reads earlier."""

    def __init__(self, seconds: float = GATHER_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if seconds <= 0:
            raise ValueError("a gather time is a positive number of seconds")
        self.seconds = seconds
        self.clock = clock
        self._last_read = clock()

    def due_in(self) -> float:
        """Seconds until the buffer is due to be read (0: now)."""
        return max(0.0, self._last_read + self.seconds - self.clock())

    def read(self) -> None:
        """Say the buffer is being read now."""
        self._last_read = self.clock()


class Pacing:
    """How long a reader may pause after a read: BATCH_SECONDS, or less when, at the rate the
    read found, more than ``lines`` lines or ``size`` bytes would come meanwhile.

    For auditd's socket to its plugins, which holds a few hundred writes (one record each):
    at 2,000 execs/s a 20 ms pause let it fill, each read took what it held, and the reads,
    not the plugin's CPU, set the rate it could take (about 1,700 execs/s of the lab's);
    auditd's queue behind the socket overflowed, and auditd dropped records for every plugin
    (2026-12-07, docs/overhead.md). At 1,000 execs/s the pause stays BATCH_SECONDS."""

    def __init__(self, lines: int, size: int, longest: float = BATCH_SECONDS,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if lines <= 0 or size <= 0:
            raise ValueError("the room is a positive number of lines and of bytes")
        self.lines = lines
        self.size = size
        self.longest = longest
        self.clock = clock
        self._last_read = clock()

    def pause(self, lines: int, size: int) -> float:
        """Seconds to pause after a read of ``lines`` lines in ``size`` bytes (0: read again
        at once)."""
        now = self.clock()
        elapsed, self._last_read = now - self._last_read, now
        fill = max(lines / self.lines, size / self.size)
        if fill <= 0:
            return self.longest
        return max(0.0, min(self.longest, elapsed / fill))


class StopFlag(Protocol):
    """What the read loops wait on between batches (set by SIGTERM/SIGINT)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float) -> bool: ...
