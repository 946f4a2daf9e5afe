"""derelayl: a Python implementation of DeRelayL (sustainable decentralized relay learning)."""

__version__ = "0.1.0"
