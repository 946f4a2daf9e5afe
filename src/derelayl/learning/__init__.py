"""The model side: Trainer/Evaluator interfaces, the paper's abstract latent model, PyTorch
adapters, datasets, partitions, deterministic model bytes and content-addressed stores.

PyTorch-based modules are imported on use (``derelayl.learning.torch_models`` etc.), so the
latent model runs without PyTorch installed."""
