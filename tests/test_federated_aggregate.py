"""Masked tree-mean, weighting schemes, server optimizers, tiers and sampling, with hand-derived
numbers."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from layout_only import LayoutOnly
from fedexit_jax.federated import aggregate, sampling, server, tiers, trees
from fedexit_jax.federated import masked_tree_mean

# XLA's float32 results against hand-derived numbers: a few ulps (numpy's default rtol=1e-7 is
# below one float32 ulp, so a different CPU's summation order could fail it).
F32 = 1e-6


def _tiny():
  # Three clients; "rows" is a 2-row stacked leaf (think: 2 layers), "head" a leaf nobody trains.
  stacked = {"rows": jnp.array([[[1.0], [10.0]], [[3.0], [20.0]], [[100.0], [100.0]]]),
             "head": jnp.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])}
  masks = {"rows": jnp.array([[[1.0], [1.0]], [[1.0], [0.0]], [[1.0], [0.0]]]),
           "head": jnp.zeros((3, 1))}
  fallback = {"rows": jnp.array([[-1.0], [-2.0]]), "head": jnp.array([7.0, 8.0])}
  return stacked, masks, fallback


def test_masked_tree_mean_hand_numbers():
  stacked, masks, fallback = _tiny()
  out = masked_tree_mean(stacked, masks, jnp.array([1.0, 3.0, 0.0]), fallback)
  # row 0: (1*1 + 3*3 + 0*100) / (1 + 3) = 2.5; row 1: only client 0 trained it -> 10.
  np.testing.assert_allclose(out["rows"], [[2.5], [10.0]], rtol=F32)
  # nobody trained "head" -> it keeps its fallback.
  np.testing.assert_allclose(out["head"], [7.0, 8.0], rtol=F32)


def test_masked_tree_mean_zero_weights_give_fallback():
  stacked, masks, fallback = _tiny()
  out = masked_tree_mean(stacked, masks, jnp.zeros(3), fallback)
  np.testing.assert_allclose(out["rows"], [[-1.0], [-2.0]], rtol=F32)
  np.testing.assert_allclose(out["head"], [7.0, 8.0], rtol=F32)
  assert np.all(np.isfinite(out["rows"]))


def test_zero_weight_client_with_nan_does_not_poison():
  stacked, masks, fallback = _tiny()
  stacked["rows"] = stacked["rows"].at[2].set(jnp.nan)
  out = masked_tree_mean(stacked, masks, jnp.array([1.0, 3.0, 0.0]), fallback)
  np.testing.assert_allclose(out["rows"], [[2.5], [10.0]], rtol=F32)


@pytest.mark.parametrize("k", [5, 16, 37])
def test_masked_tree_mean_matches_numpy_for_any_number_of_clients(k):
  # Stacks above 16 clients are summed block by block (padded): same result, NaN-safe.
  rng = np.random.default_rng(k)
  x = rng.standard_normal((k, 3, 4)).astype(np.float32)
  m = (rng.random((k, 3, 1)) < 0.6).astype(np.float32)
  w = rng.uniform(0.5, 2.0, k).astype(np.float32)
  w[1] = 0.0
  x[1] = np.nan  # a zero-weight client's NaN must not leak
  fallback = np.full((3, 4), -9.0, np.float32)
  out = masked_tree_mean({"a": jnp.asarray(x)}, {"a": jnp.asarray(m)}, jnp.asarray(w),
                         {"a": jnp.asarray(fallback)})["a"]
  wm = w[:, None, None] * m
  num = np.nansum(np.where(wm != 0, x * wm, 0.0), axis=0)
  den = wm.sum(0)
  want = np.where(den > 0, num / np.where(den > 0, den, 1.0), fallback)
  np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)


def test_streaming_accumulator_equals_one_shot():
  stacked, masks, fallback = _tiny()
  w = jnp.array([1.0, 3.0, 2.0])
  first = aggregate.weighted_sums(jax.tree.map(lambda x: x[:1], stacked),
                                  jax.tree.map(lambda x: x[:1], masks), w[:1])
  acc = aggregate.accumulate(first, jax.tree.map(lambda x: x[1:], stacked),
                             jax.tree.map(lambda x: x[1:], masks), w[1:])
  streamed = aggregate.finalize(acc, fallback)
  # row 0: (1 + 9 + 200) / 6 = 35
  np.testing.assert_allclose(streamed["rows"], [[35.0], [10.0]], rtol=F32)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=F32), streamed,
               masked_tree_mean(stacked, masks, w, fallback))


def test_weighting_schemes():
  n, d = jnp.array([10.0, 20.0]), jnp.array([3, 6])
  np.testing.assert_allclose(aggregate.client_weights("paper", n, d), [30, 120], rtol=F32)
  np.testing.assert_allclose(aggregate.client_weights("samples", n, d), [10, 20], rtol=F32)
  np.testing.assert_allclose(aggregate.client_weights("uniform", n, d), [1, 1], rtol=F32)
  np.testing.assert_allclose(aggregate.client_weights("depth", n, d), [3, 6], rtol=F32)
  np.testing.assert_allclose(aggregate.client_weights("fedavg_naive", n, d), [10, 20], rtol=F32)
  assert aggregate.counts_untrained("fedavg_naive") and not aggregate.counts_untrained("paper")
  with pytest.raises(ValueError, match="weighting scheme 'nope'"):
    aggregate.client_weights("nope", n, d)


def test_paper_eq1_on_layer_tree_with_depth_masks():
  # Trainable-tree layout: 2 stacked layers, exits (1, 2). Client A depth 1 (n=10), B depth 2 (n=5).
  full = {"backbone": {"encoder": {"layers": {"w": jnp.zeros((2, 1))}}},
          "heads": {"bias": jnp.zeros((2, 1))}}
  layout = LayoutOnly(exits=(1, 2), num_layers=2)
  masks = jax.tree.map(lambda a, b: jnp.stack([a, b]),
                       trees.depth_mask(layout, full, 1), trees.depth_mask(layout, full, 2))
  stacked = {"backbone": {"encoder": {"layers": {"w": jnp.array([[[1.0], [0.0]], [[4.0], [8.0]]])}}},
             "heads": {"bias": jnp.array([[[2.0], [0.0]], [[5.0], [6.0]]])}}
  w = aggregate.client_weights("paper", jnp.array([10.0, 5.0]), jnp.array([1, 2]))  # [10, 10]
  out = masked_tree_mean(stacked, masks, w, full)
  # layer 1: (10*1 + 10*4) / 20 = 2.5 ; layer 2: only B -> 8 ; heads likewise 3.5 and 6.
  np.testing.assert_allclose(out["backbone"]["encoder"]["layers"]["w"], [[2.5], [8.0]], rtol=F32)
  np.testing.assert_allclose(out["heads"]["bias"], [[3.5], [6.0]], rtol=F32)
  # fedavg_naive: A sends back its untouched layer 2 (0, the server copy) -> (10*0 + 5*8)/15.
  naive_masks = jax.tree.map(jnp.ones_like, masks)
  wn = aggregate.client_weights("fedavg_naive", jnp.array([10.0, 5.0]), jnp.array([1, 2]))
  out = masked_tree_mean(stacked, naive_masks, wn, full)
  np.testing.assert_allclose(out["backbone"]["encoder"]["layers"]["w"][1], [40.0 / 15.0], rtol=1e-6)


def test_fedavg_server_is_the_mean_and_untrained_params_stay():
  params = {"a": jnp.array([1.0, 2.0]), "b": jnp.array([5.0])}
  opt = server.server_optimizer("fedavgm")
  st = server.init_server_state(params, opt, jax.random.key(0))
  delta = {"a": jnp.array([0.5, -1.0]), "b": jnp.array([0.0])}
  trained = {"a": jnp.array([True, True]), "b": jnp.array([False])}
  st = server.apply_update(st, opt, delta, trained)
  np.testing.assert_allclose(st.params["a"], [1.5, 1.0], rtol=F32)
  # second round: nobody trains "a"; momentum would move it, Eq. 1 says it keeps its value.
  st2 = server.apply_update(st, opt, jax.tree.map(jnp.zeros_like, delta),
                            {"a": jnp.array([False, False]), "b": jnp.array([False])})
  np.testing.assert_allclose(st2.params["a"], [1.5, 1.0], rtol=F32)
  np.testing.assert_allclose(st2.params["b"], [5.0], rtol=F32)
  assert int(st2.round) == 2
  for name in server.SERVER_OPTIMIZERS:
    server.server_optimizer(name)
  with pytest.raises(ValueError, match="server optimizer 'sgd'"):
    server.server_optimizer("sgd")


def test_tiers_exact_fractions_and_determinism():
  t = tiers.paper_tiers(best_depth=6)
  np.testing.assert_array_equal(tiers.tier_counts(5, t), [3, 2])
  d1 = tiers.client_depths(100, t, seed=1)
  np.testing.assert_array_equal(np.bincount(d1)[[3, 6]], [50, 50])
  np.testing.assert_array_equal(d1, tiers.client_depths(100, t, seed=1))
  assert not np.array_equal(d1, tiers.client_depths(100, t, seed=2))
  with pytest.raises(ValueError, match="max_depth 13"):
    tiers.client_depths(4, tiers.paper_tiers(13), seed=0, num_layers=12)
  with pytest.raises(ValueError, match="sum to 1"):
    tiers.tier_counts(4, (tiers.Tier("x", 0.3, 3),))
  with pytest.raises(ValueError, match=r"\[4\]"):
    tiers.explicit_depths([3, 4, 6], exits=(3, 6), num_layers=12)


def test_sampling_is_a_function_of_seed_and_round():
  a = sampling.sample_clients(7, 3, 100, clients_per_round=10)
  np.testing.assert_array_equal(a, sampling.sample_clients(7, 3, 100, clients_per_round=10))
  assert len(set(a.tolist())) == 10 and np.all(np.diff(a) > 0)
  assert not np.array_equal(a, sampling.sample_clients(7, 4, 100, clients_per_round=10))
  assert len(sampling.sample_clients(7, 3, 100, fraction=0.25)) == 25
  with pytest.raises(ValueError, match="cannot sample 101"):
    sampling.sample_clients(0, 0, 100, clients_per_round=101)
