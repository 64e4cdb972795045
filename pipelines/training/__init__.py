"""Training: datasets, the model-agnostic trainer, MeLU's meta-learning loop and MLflow registration.

``dataset`` (training frames to tensors, the fitted encoder), ``trainer`` (generic loop with callbacks), ``ddp``
(data-parallel entry point), ``melu`` (MeLU's meta-learning on MovieLens-1M), ``registry`` (the ranker's MLflow
pyfunc), ``config`` (what a run can be told), ``api`` (train any catalog model, register it as ``candidate``).
"""
