"""Health checks: the engine's HTTP API (health), its progress while a canary waits
(progress), its and the kernel's log lines (classify), why a unit is down (diagnosis).
"""
