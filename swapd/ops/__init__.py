"""Running swapd as a service: systemd readiness and watchdog (``notify``), inherited
listening sockets (``activation``) and the user unit ``swapd install-service`` writes
(``service``).

This layer sits beside ``daemon.py``: it may import everything to its left (core events,
the reload events) and nothing imports it except ``daemon.py`` and ``cli.py``. No systemd
library is used: the protocols are a datagram and a few environment variables.
"""
