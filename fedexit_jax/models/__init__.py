"""wav2vec 2.0 / HuBERT backbone with exit heads: Flax NNX modules (modules.py), the functional API
on plain parameter dicts (wav2vec2.py, early_exit.py, heads.py) and the model the federated
engine trains (speech_model.SpeechExitModel)."""
from fedexit_jax.models import (config, early_exit, feature_cache, heads, modules, pretrained,
                                speech_model, wav2vec2)
from fedexit_jax.models.feature_cache import cache_features
from fedexit_jax.models.modules import Encoder, ExitHeads, SpeechEarlyExit
from fedexit_jax.models.pretrained import load_backbone, load_early_exit
from fedexit_jax.models.speech_model import SpeechExitModel, split_params
from fedexit_jax.models.wav2vec2 import encode, encode_features, extract_features, init_params

__all__ = ["config", "early_exit", "feature_cache", "heads", "modules", "pretrained",
           "speech_model", "wav2vec2", "cache_features", "Encoder", "ExitHeads", "SpeechEarlyExit",
           "SpeechExitModel", "load_backbone", "load_early_exit", "split_params", "encode",
           "encode_features", "extract_features", "init_params"]
