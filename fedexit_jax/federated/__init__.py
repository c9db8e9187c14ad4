"""Federated simulation engine (see simulate.py for the round)."""
from fedexit_jax.federated.aggregate import masked_tree_mean
