"""PyTorch (transformers / fairseq) checkpoint conversion and the converted-checkpoint format."""
from fedexit_jax.convert.pytorch import (CheckpointFileError, CheckpointMismatchError,
                                         config_from_fairseq,
                                         config_from_hf_dict, convert_state_dict,
                                         load_pytorch_checkpoint, load_state_dict_file)
from fedexit_jax.convert.saved import load_converted, save_converted

__all__ = ["CheckpointFileError", "CheckpointMismatchError", "config_from_fairseq", "config_from_hf_dict",
           "convert_state_dict", "load_pytorch_checkpoint", "load_state_dict_file",
           "load_converted", "save_converted"]
