"""Linux sensor: /proc, audit and eBPF sources, enrichment into the common schema."""
