"""Drives participants in one process: block producers and the local network runner."""
