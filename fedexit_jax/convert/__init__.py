"""PyTorch (transformers / fairseq) checkpoint conversion, the converted-checkpoint format, and
loading a backbone by name or path (`builtin:` names included)."""
from fedexit_jax.convert.pytorch import (CheckpointFileError, CheckpointMismatchError,
                                         config_from_fairseq,
                                         config_from_hf_dict, convert_state_dict,
                                         load_pytorch_checkpoint, load_state_dict_file)
from fedexit_jax.convert.saved import load_converted, save_converted
from fedexit_jax.convert.pretrained import (BUILTIN, BUILTIN_PREFIX, load_backbone,
                                            load_early_exit, resolve_builtin)

__all__ = ["CheckpointFileError", "CheckpointMismatchError", "config_from_fairseq", "config_from_hf_dict",
           "convert_state_dict", "load_pytorch_checkpoint", "load_state_dict_file",
           "load_converted", "save_converted", "BUILTIN", "BUILTIN_PREFIX", "load_backbone",
           "load_early_exit", "resolve_builtin"]
