"""What participants decide (bids), as pure policies shared by simulator and real nodes."""

from derelayl.agents.policies import reference_bids, reference_mo_bids, taker_bids

__all__ = ["reference_bids", "reference_mo_bids", "taker_bids"]
