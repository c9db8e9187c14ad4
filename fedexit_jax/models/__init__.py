"""wav2vec 2.0 / HuBERT backbone (config, encoder, exit heads) as pure functions on dict pytrees."""
from fedexit_jax.models import config, early_exit, heads, wav2vec2
from fedexit_jax.models.wav2vec2 import encode, encode_features, extract_features, init_params

__all__ = ["config", "early_exit", "heads", "wav2vec2", "encode", "encode_features",
           "extract_features", "init_params"]
