"""The platform-independent commands of ``ttpsensor``, one module per command group, each
registered as an entry point (pyproject.toml) like the platform commands."""
