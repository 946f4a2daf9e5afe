"""Baselines on the same split, model, initial weights and seeds as DeRelayL: FedAvg,
centralized, local-only and gossip learning. All reuse ``derelayl.learning``."""

from derelayl.baselines.centralized import run_centralized
from derelayl.baselines.curve import Budget, Curve, Point
from derelayl.baselines.federated import run_fedavg, run_gossip, run_local_only

__all__ = ["Budget", "Curve", "Point", "run_centralized", "run_fedavg", "run_gossip", "run_local_only"]
