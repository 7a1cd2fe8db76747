"""How long the live sources let events gather between reads, and the flag they wait on.

Without a pause every exec wakes the sensor (a ring buffer wake-up, several netlink datagrams,
a pipe write by auditd), and each wake-up costs a system call round trip and a pass through the
loop. Waiting 20 ms after each drain turns thousands of wake-ups a second into fifty. The
buffers in between are far larger than 20 ms of events at any exec rate this host can reach:
the BPF ring buffer (4 MiB by default), the netlink socket (16 MiB), the plugin pipe (1 MiB,
enlarged at start). The overhead lab (``ttpsensor bench overhead``) measures the effect.
Larger batches cost less per event still: the audit netlink source waits 100 ms (its socket
holds far more; ``AuditSource.batch_seconds``), and the eBPF sources read their ring every
100 ms unless it is filling (``RingInput`` in ``sensor_linux/ebpf/source.py``). The plugin
reads a 1 MiB pipe that auditd must not find full, and keeps 20 ms.
"""

from typing import Protocol

BATCH_SECONDS = 0.02


class StopFlag(Protocol):
    """What the read loops wait on between batches (set by SIGTERM/SIGINT)."""

    def is_set(self) -> bool: ...
    def wait(self, timeout: float) -> bool: ...
