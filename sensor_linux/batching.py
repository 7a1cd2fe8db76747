"""How long the live sources let events gather between reads.

Without a pause every exec wakes the sensor (a ring buffer wake-up, several netlink datagrams,
a pipe write by auditd), and each wake-up costs a system call round trip and a pass through the
loop. Waiting 20 ms after each drain turns thousands of wake-ups a second into fifty. The
buffers in between are far larger than 20 ms of events at any exec rate this host can reach:
the BPF ring buffer (4 MiB by default), the netlink socket (16 MiB), the plugin pipe (1 MiB,
enlarged at start). The overhead lab (``ttpsensor bench overhead``) measures the effect.
"""

BATCH_SECONDS = 0.02
