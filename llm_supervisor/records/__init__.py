"""What is kept: the event history (history), metrics (metrics), the recorder that commits
a check once (recorder), the disk thread (disk), atomic writes (atomic), state.json
(memory), the support bundle (support).
"""
