"""Fast in-process simulation of the protocol (the paper's numerical results)."""
