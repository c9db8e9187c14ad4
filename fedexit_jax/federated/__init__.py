"""Federated simulation engine: a whole cohort of heterogeneous-depth clients per compiled round.

The engine imports no model: it federates any early-exit model handed to it as a
model.EarlyExitModel (a forward pass to a depth, and which parameter leaves are stacked per
layer, per exit, or shared). The wav2vec 2.0 / HuBERT model is
fedexit_jax.speech_model.SpeechExitModel.

Public API (stable; train.py and the benchmarks call exactly this):

    from fedexit_jax import federated as fl
    from fedexit_jax import models
    from fedexit_jax.speech_model import SpeechExitModel

    # 1. the model and its trainable tree (backbone without the frozen conv feature extractor,
    #    plus the stacked exit heads)
    model = SpeechExitModel(cfg, exits)
    params, frozen = models.split_params(models.init_params(cfg, k1),
                                         models.heads.init_exit_heads(k2, cfg.hidden_size, C,
                                                                      len(exits)))
    # 2. cache the frozen conv features once: [M, N, S] waveforms -> [M, N, T, C'] + [M, N, T]
    feats, fmask = models.cache_features(cfg, frozen, waves, attention_mask)
    dataset = fl.ClientData(feats, fmask, labels, example_mask)     # every leaf [M clients, N, ...]
    depths = fl.client_depths(M, fl.paper_tiers(best_depth=6), seed)  # or fl.explicit_depths(...)
    # 3. static description of a round (build once; a new spec object recompiles)
    spec = fl.RoundSpec(
        client=fl.ClientSpec(model, optimizer=optax.sgd(0.05), loss="last",
                             local_epochs=1, local_steps=None, batch_size=8, prox_mu=0.0),
        server_optimizer=fl.server_optimizer("fedavg"),  # fedavgm / fedadam / fedyogi
        weighting="paper",       # samples / uniform / depth / fedavg_naive / homogeneous
        depth_levels=(3, 6),     # every depth a cohort may hold (default: all exits; each
                                 # level compiles its own bucket, so list only the tiers' depths)
        chunk_size=None)         # None: per-backend default (CPU 1, accelerators 16 per device)
    state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(seed))
    resident = fl.place_dataset(dataset, spec)  # on the device(s) once; rounds gather by id
    for r in range(rounds):
      ids = fl.sample_clients(seed, r, M, clients_per_round=K)        # deterministic in (seed, r)
      state, metrics = fl.run_round(state, fl.cohort_from_dataset(resident, ids, depths), spec)
      ev = fl.evaluate(model, state.params, test_feats, test_fmask, test_labels)
      # ev["error"][i] = test error at exit model.exits[i]; metrics["loss"] [K], ...

ServerState(params, opt_state, round, rng) is a plain pytree (checkpoint it as is). With
SpeechExitModel(..., train_feature_encoder=True) the feature extractor is trainable: pass
split_params(..., train_feature_encoder=True) and waveforms/sample masks as ClientData.

Modules: model (the interface), aggregate (masked tree-mean, weighting schemes), trees (what a
depth slices), client (local training as pure functions), server (server state and optimizers),
simulate (the round), tiers, sampling, evaluate (central evaluation), objective (what a client
minimises given the exits' outputs: CrossEntropy, CTC), schedule (the client learning rate over
rounds).
"""
from fedexit_jax.federated.aggregate import SCHEMES, client_weights, masked_tree_mean
from fedexit_jax.federated.client import (ClientData, ClientMetrics, ClientSpec, ClientState,
                                          client_final, client_init, client_step, train_chunk,
                                          train_client)
from fedexit_jax.federated.evaluate import evaluate
from fedexit_jax.federated.model import EarlyExitModel
from fedexit_jax.federated.objective import CTC, CrossEntropy, Objective
from fedexit_jax.federated.sampling import sample_clients
from fedexit_jax.federated.schedule import WarmupCosine
from fedexit_jax.federated.replicas import run_replicas, stack_states, unstack_state
from fedexit_jax.federated.server import (SERVER_OPTIMIZERS, ServerState, init_server_state,
                                          server_optimizer)
from fedexit_jax.federated.simulate import (Cohort, ResidentDataset, RoundSpec,
                                            cohort_from_dataset, default_chunk_size,
                                            place_dataset, run_round, run_round_reference)
from fedexit_jax.federated.tiers import (Tier, client_depths, explicit_depths, homogeneous_tiers,
                                         paper_tiers)
from fedexit_jax.federated.trees import slice_to_depth

__all__ = [
    "CTC", "SCHEMES", "SERVER_OPTIMIZERS", "ClientData", "ClientMetrics", "ClientSpec", "ClientState",
    "Cohort", "CrossEntropy", "EarlyExitModel", "Objective", "ResidentDataset", "RoundSpec", "ServerState", "Tier",
    "client_depths", "client_final", "client_init", "client_step", "client_weights",
    "cohort_from_dataset", "default_chunk_size", "evaluate", "explicit_depths",
    "homogeneous_tiers", "init_server_state", "masked_tree_mean", "paper_tiers", "place_dataset",
    "run_replicas", "run_round", "run_round_reference", "sample_clients", "stack_states",
    "unstack_state", "server_optimizer", "slice_to_depth",
    "train_chunk", "train_client", "WarmupCosine",
]
