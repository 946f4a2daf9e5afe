"""The DeRelayL rules on an EVM chain: the Vyper contract (``contracts/DeRelayL.vy``), its
compiled artifact, signing, node backends (embedded py-evm, anvil, any JSON-RPC URL), the
contract client that keeps a verified Python replay of the contract's history, and replay.

Nothing here re-implements a rule: the contract applies them on chain, and every client
replays the contract's events with ``derelayl.protocol`` and compares."""
