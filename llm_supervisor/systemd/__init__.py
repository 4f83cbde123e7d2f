"""systemd: systemctl and journalctl (systemctl), the manager's D-Bus API (dbus), the one
journal reader (journal), the engines' unit files (units), the actuator (actuator).
"""
