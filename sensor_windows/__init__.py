"""Windows twin: ETW process-start events enriched like QLOG (issue 6).

Only the ETW session and Win32 calls need Windows; everything after them runs on any OS.
"""
