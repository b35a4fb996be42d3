"""Encoders and the Gaussian head, all built from specs through one registry."""
from .registry import make, models, register, register_lazy, UnknownModelError  # noqa: F401
from .state_dict import CheckpointError, load_state_dict_strict  # noqa: F401
from .checkpoint import (load_checkpoint, model_from_checkpoint, model_payload,  # noqa: F401
                         save_checkpoint, sr_model_from_checkpoint)
from . import mlp, edsr, rdn, swinir, hat  # noqa: F401  (each module registers its models)

# The head lives at the top level (the design card) and builds its encoder through this registry: it is imported
# when a spec first names it.
register_lazy("continuous-gaussian", "gaussian:ContinuousGaussian")
