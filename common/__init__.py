"""Platform-independent core of ttpsensor: event schema, TTPHash, file identity, renderers, sinks.

Nothing here imports ``sensor_linux``, ``sensor_windows`` or ``collector``; platform code
depends on this package, never the reverse.
"""

__version__ = "0.1.0"
