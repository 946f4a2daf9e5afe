"""The model side: trainers and evaluators (abstract latent score; PyTorch)."""
