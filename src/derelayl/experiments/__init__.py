"""Experiments: DeRelayL against federated and other baselines on identical splits."""
