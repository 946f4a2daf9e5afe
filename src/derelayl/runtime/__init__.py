"""Networks in one process: the round driver (agents' messages to the drawn miner, its block
to a chain client) and the local network behind ``derelayl run``."""
