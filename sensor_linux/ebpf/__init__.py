"""Linux eBPF exec source (BCC): tracepoints only, argv snapshotted at syscall entry."""
