"""Processes and their lifetimes: spawning model servers, health, sleep/wake, supervision.

This layer owns every child process swapd starts and the nurseries that watch them. It may
import trio, attrs and (for probes only) httpx, and the layers to its left (errors, config,
core, observe); never ``web/``. Only ``procgroup.py`` and ``lifeline.py`` send signals or
spawn processes.
"""
