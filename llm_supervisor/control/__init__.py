"""The control plane: the socket server (server), the handlers that read the daemon and
queue intents (handlers), how documents read for people (render), the client (client), the
CLI (cli) and its fast status path (ctl).
"""
