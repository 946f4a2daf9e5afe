"""What participants decide: one ``Agent`` per key, its bid policies, and the vectorised
population the simulator uses (the same policy over all participants at once). The model side
with real PyTorch models, ``RelayBrain``, is in ``derelayl.agents.relay`` (imported on use, so
the latent model runs without PyTorch)."""

from derelayl.agents.agent import Agent, Brain, Signer
from derelayl.agents.latent import LatentBrain, LatentPopulation
from derelayl.agents.policies import mo_bid, taker_bid, taker_value

__all__ = ["Agent", "Brain", "LatentBrain", "LatentPopulation", "Signer", "mo_bid", "taker_bid", "taker_value"]
