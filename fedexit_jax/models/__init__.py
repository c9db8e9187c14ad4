"""wav2vec 2.0 / HuBERT backbone with exit heads: Flax NNX modules (modules.py), the functional API
on plain parameter dicts (wav2vec2.py, early_exit.py, heads.py), the trainable/frozen split the
engine trains (trainable.py) and frozen conv features computed once (feature_cache.py). Nothing
here imports the federated engine; fedexit_jax/speech_model.py declares this model to it."""
from fedexit_jax.models import (config, early_exit, feature_cache, heads, modules, trainable,
                                wav2vec2)
from fedexit_jax.models.feature_cache import cache_features
from fedexit_jax.models.modules import Encoder, ExitHeads, SpeechEarlyExit
from fedexit_jax.models.trainable import split_params
from fedexit_jax.models.wav2vec2 import encode, encode_features, extract_features, init_params

__all__ = ["config", "early_exit", "feature_cache", "heads", "modules", "trainable", "wav2vec2",
           "cache_features", "Encoder", "ExitHeads", "SpeechEarlyExit", "split_params", "encode",
           "encode_features", "extract_features", "init_params"]
