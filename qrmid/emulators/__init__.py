"""Faithful emulators of the vendor services qrmid talks to, each a real HTTP server run as its own process."""
