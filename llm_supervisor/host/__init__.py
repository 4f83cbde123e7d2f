"""The host: tier probes (probes), tiers and what a kind supports (tiers), llama-server's
device lists (devicelist), who holds a port (ports), derived tuning (tuning), the host view
(view), tools run with timeouts (process), an engine's clients as the kernel sees them
(clients).
"""
