"""The vectorised round against a per-client Python loop, recompilation, non-finite clients,
sharding over 8 simulated devices, and the depth cost of a client step."""
import functools
import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fedexit_jax.speech_model import SpeechExitModel
from fedexit_jax import accounting, models
from fedexit_jax import federated as fl
from layout_only import LayoutOnly
from fedexit_jax.federated import aggregate, simulate, trees
from fedexit_jax.models import config as mconfig, heads, wav2vec2

EXITS = (2, 4)
CLASSES = 5
N, T, C = 6, 8, 16


def tiny_config(layers=4):
  return mconfig.small(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                       conv_dim=(C,) * 7, num_hidden_layers=layers, num_conv_pos_embeddings=4,
                       num_conv_pos_embedding_groups=2)


def tiny_dataset(num_clients, seed=0):
  rs = np.random.RandomState(seed)
  sizes = rs.randint(1, N + 1, size=num_clients)  # uneven local data: padding + example masks
  return fl.ClientData(rs.randn(num_clients, N, T, C).astype(np.float32),
                       np.arange(T)[None, None] < rs.randint(4, T + 1, (num_clients, N, 1)),
                       rs.randint(0, CLASSES, (num_clients, N)).astype(np.int32),
                       np.arange(N)[None] < sizes[:, None])


pytestmark = pytest.mark.usefixtures("fast_compiles")


@pytest.fixture(scope="module")
def setup():
  cfg = tiny_config()
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                              heads.init_exit_heads(jax.random.key(1), 32, CLASSES, len(EXITS)))
  client = fl.ClientSpec(SpeechExitModel(cfg, EXITS), optax.sgd(0.1), loss="last", local_epochs=2, batch_size=4)
  spec = fl.RoundSpec(client, weighting="paper", depth_levels=(2, 4), chunk_size=4)
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(2))
  dataset = tiny_dataset(12)
  depths = np.array([2, 4] * 6)
  return cfg, spec, state, dataset, depths


IDS = [0, 1, 2, 3, 4, 5, 6, 8, 9, 11]  # 5 x depth 2, 5 x depth 4: two chunks of 4 per bucket


@pytest.fixture(scope="module")
def first_round(setup):
  _, spec, state, dataset, depths = setup
  cohort = fl.cohort_from_dataset(dataset, IDS, depths)
  return cohort, fl.run_round(state, cohort, spec)


def assert_trees_close(a, b, atol=2e-6):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=1e-5)


def test_round_equals_per_client_loop(setup, first_round):
  _, spec, state, dataset, depths = setup
  cohort, (new, m) = first_round
  ref, mr = fl.run_round_reference(state, cohort, spec)
  assert_trees_close(new.params, ref.params)
  np.testing.assert_allclose(m["loss"], mr["loss"], rtol=1e-5)
  # weights n_i * L_i are small integers in float32: exact by construction
  np.testing.assert_array_equal(m["weight"], mr["weight"])
  # paper weights n_i * L_i, hand-checkable from the example masks
  np.testing.assert_array_equal(m["weight"], cohort.data.example_mask.sum(1) * cohort.depths)
  assert int(m["num_nonfinite"]) == 0 and int(new.round) == 1
  changed = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), new.params, state.params)
  assert all(jax.tree.leaves(changed))  # every layer and head trained by someone moved


def _count_host_bytes(monkeypatch) -> list[int]:
  """Records the bytes of host arrays each call of simulate._to_device copies to the devices."""
  moved, real = [], simulate._to_device

  def counting(tree, sharding):
    moved.append(sum(x.nbytes for x in jax.tree.leaves(tree) if isinstance(x, np.ndarray)))
    return real(tree, sharding)

  monkeypatch.setattr(simulate, "_to_device", counting)
  return moved


def test_resident_dataset_gives_the_same_round_and_copies_no_client_data(setup, first_round,
                                                                          monkeypatch):
  _, spec, state, dataset, depths = setup
  cohort, (new, m) = first_round
  resident = fl.place_dataset(dataset, spec)
  moved = _count_host_bytes(monkeypatch)
  new_r, m_r = fl.run_round(state, fl.cohort_from_dataset(resident, IDS, depths), spec)
  assert_trees_close(new_r.params, new.params)
  np.testing.assert_allclose(m_r["loss"], m["loss"], rtol=1e-5)
  np.testing.assert_array_equal(m_r["weight"], m["weight"])  # small integers: exact
  ref, _ = fl.run_round_reference(state, fl.cohort_from_dataset(resident, IDS, depths), spec)
  assert_trees_close(ref.params, new.params)
  # Rounds 2..4: no implicit host-to-device transfer at all, and the explicit copies are the
  # layout (client rows, ids, bounds): a few bytes per client, not the clients' features.
  moved.clear()
  compiled = simulate._program(spec)._cache_size()
  other = ([1, 3, 4, 5, 7, 9, 11, 0, 2, 10], [0, 2, 4, 6, 8, 10, 1, 3, 5, 7], IDS)
  with jax.transfer_guard_host_to_device("disallow"):
    for ids in other:
      new_r, _ = fl.run_round(new_r, fl.cohort_from_dataset(resident, ids, depths), spec)
  assert simulate._program(spec)._cache_size() == compiled  # other cohorts: no recompile
  per_round = sum(moved) / len(other)
  client_bytes = sum(np.asarray(a)[:len(IDS)].nbytes for a in dataset)
  assert 0 < per_round < 500 < client_bytes, (per_round, client_bytes)
  moved.clear()  # the host path copies the cohort's arrays every round
  fl.run_round(new_r, fl.cohort_from_dataset(dataset, IDS, depths), spec)
  assert sum(moved) > client_bytes


def test_cohort_changes_never_recompile_and_shallow_rounds_keep_deep_layers(setup):
  _, spec, state, dataset, depths = setup
  program = simulate._program(spec)
  state, _ = fl.run_round(state, fl.cohort_from_dataset(dataset, IDS, depths), spec)
  compiled = program._cache_size()  # (another test may have compiled the resident-data variant)
  for ids in ([1, 3, 4, 5, 7, 9, 11, 0, 2, 10], [0, 2, 4, 6, 8, 10, 1, 3, 5, 7]):
    state, _ = fl.run_round(state, fl.cohort_from_dataset(dataset, ids, depths), spec)
  before = state
  # only depth-2 clients (and other data sizes): the deep layers and exit-4 head must not move.
  shallow_ids = [0, 2, 4, 6, 8, 10, 11, 1, 3, 5]
  state, m = fl.run_round(state, fl.cohort_from_dataset(dataset, shallow_ids, np.full(12, 2)), spec)
  assert program._cache_size() == compiled, "a different cohort recompiled the round"
  layers, old = state.params["backbone"]["encoder"]["layers"], before.params["backbone"]["encoder"]["layers"]
  # untrained parameters are kept by a `where` on the old value: bitwise equal by construction
  for new_leaf, old_leaf in zip(jax.tree.leaves(layers), jax.tree.leaves(old)):
    np.testing.assert_array_equal(new_leaf[2:], old_leaf[2:])
    assert np.any(np.asarray(new_leaf[:2]) != np.asarray(old_leaf[:2]))
  np.testing.assert_array_equal(state.params["heads"]["kernel"][1], before.params["heads"]["kernel"][1])
  assert int(state.round) == 4


def test_nonfinite_client_is_excluded_and_counted(setup):
  _, spec, state, dataset, depths = setup
  ids = IDS
  bad = fl.cohort_from_dataset(dataset, ids, depths)
  inputs = bad.data.inputs.copy()
  inputs[3] = np.nan  # client 3 (depth 4) diverges
  bad = bad._replace(data=bad.data._replace(inputs=inputs))
  new, m = fl.run_round(state, bad, spec)
  assert int(m["num_nonfinite"]) == 1
  np.testing.assert_array_equal(np.asarray(m["finite"]), np.arange(len(ids)) != 3)
  assert float(m["weight"][3]) == 0.0
  chex_finite = [bool(jnp.all(jnp.isfinite(x))) for x in jax.tree.leaves(new.params)]
  assert all(chex_finite)
  # same as the round in which that client had no data at all: equal to float tolerance, not
  # bitwise (another input changes XLA's summation order on some CPUs; seen: 4.7e-21 on 3.4e-16)
  empty = fl.cohort_from_dataset(dataset, ids, depths)
  em = empty.data.example_mask.copy()
  em[3] = False
  clean, _ = fl.run_round(state, empty._replace(data=empty.data._replace(example_mask=em)), spec)
  assert_trees_close(new.params, clean.params)


@pytest.mark.parametrize("naive", [False, True])
@pytest.mark.parametrize("deep", [False, True])
def test_streamed_depth_accumulation_equals_masked_tree_mean(naive, deep):
  # Model-free: a 3-layer, 2-exit tree; a chunk of two depth-1 clients then one depth-3 client.
  full = {"backbone": {"encoder": {"layers": {"w": jnp.zeros((3, 2))}}, "proj": jnp.zeros((2,))},
          "heads": {"b": jnp.zeros((2, 1))}}
  model = LayoutOnly(exits=(1, 3), num_layers=3)
  rs = np.random.RandomState(0)
  d1 = jax.tree.map(lambda x: jnp.asarray(rs.randn(2, *x.shape), jnp.float32),
                    trees.slice_to_depth(model, full, 1, deep))
  d3 = jax.tree.map(lambda x: jnp.asarray(rs.randn(1, *x.shape), jnp.float32),
                    trees.slice_to_depth(model, full, 3, deep))
  w1, w3 = jnp.array([2.0, 0.5]), jnp.array([3.0])
  acc = aggregate.Accumulator(jax.tree.map(jnp.zeros_like, full), trees.zero_denominator(model, full))
  acc = simulate._accumulate_depth(model, acc, d1, w1, 1, naive, deep)
  acc = simulate._accumulate_depth(model, acc, d3, w3, 3, naive, deep)
  streamed = aggregate.finalize(acc, full)
  one = lambda t, i: jax.tree.map(lambda x: x[i], t)
  stacked = jax.tree.map(lambda a, b, c: jnp.stack([a, b, c]),
                         *[trees.pad_to_full(model, one(d1, i), full, 1, deep) for i in (0, 1)],
                         trees.pad_to_full(model, one(d3, 0), full, 3, deep))
  mask = lambda d: trees.depth_mask(model, full, d, naive, deep)
  masks = jax.tree.map(lambda a, b, c: jnp.stack([a, b, c]), mask(1), mask(1), mask(3))
  assert_trees_close(streamed, fl.masked_tree_mean(stacked, masks, jnp.array([2.0, 0.5, 3.0]), full))
  layer3 = streamed["backbone"]["encoder"]["layers"]["w"][2]
  # layer 3: only the depth-3 client trained it; naive FedAvg dilutes it by the shallow weights.
  expect = d3["backbone"]["encoder"]["layers"]["w"][0, 2] * (3.0 / 5.5 if naive else 1.0)
  np.testing.assert_allclose(layer3, expect, rtol=1e-6)
  # exit-1 head: the deepest-exit loss leaves it to the depth-1 clients alone (hand-derived mean)
  h1 = (2.0 * d1["heads"]["b"][0, 0] + 0.5 * d1["heads"]["b"][1, 0]) / 2.5
  if not deep:  # the summed loss trains it at depth 3 too
    h1 = (2.5 * h1 + 3.0 * d3["heads"]["b"][0, 0]) / 5.5
  elif naive:  # hetero FedAvg averages the depth-3 client's untouched head (zero delta) in
    h1 = 2.5 * h1 / 5.5
  np.testing.assert_allclose(streamed["heads"]["b"][0], h1, rtol=1e-5)

  # Per-device partial sums (groups=2, what a round spread over 2 devices keeps): a chunk of two
  # depth-1 clients goes one to each partial, then a depth-3 chunk of [client, padding] (w = 0).
  # Each partial holds its own clients only; their sum is the single accumulator's.
  acc2 = jax.tree.map(lambda a: jnp.zeros((2,) + a.shape, a.dtype),
                      aggregate.Accumulator(jax.tree.map(jnp.zeros_like, full),
                                            trees.zero_denominator(model, full)))
  acc2 = simulate._accumulate_depth(model, acc2, d1, w1, 1, naive, deep, groups=2)
  pad = jax.tree.map(lambda x: jnp.concatenate([x, 100.0 + jnp.zeros_like(x)]), d3)
  acc2 = simulate._accumulate_depth(model, acc2, pad, jnp.array([3.0, 0.0]), 3, naive, deep,
                                    groups=2)
  w_part0 = acc2.numerator["backbone"]["encoder"]["layers"]["w"][0, 0]  # layer 1, first partial
  np.testing.assert_allclose(w_part0, 2.0 * d1["backbone"]["encoder"]["layers"]["w"][0, 0]
                             + 3.0 * d3["backbone"]["encoder"]["layers"]["w"][0, 0], rtol=1e-6)
  np.testing.assert_allclose(acc2.numerator["backbone"]["encoder"]["layers"]["w"][1, 0],
                             0.5 * d1["backbone"]["encoder"]["layers"]["w"][1, 0], rtol=1e-6)
  summed = jax.tree.map(lambda a: jnp.sum(a, axis=0), acc2)
  assert_trees_close(summed, acc)
  assert_trees_close(aggregate.finalize(summed, full), streamed)


def test_depth3_client_step_costs_about_a_quarter_of_depth12():
  cfg = tiny_config(layers=12)
  exits = (3, 6, 9, 12)
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                              heads.init_exit_heads(jax.random.key(1), 32, CLASSES, len(exits)))
  spec = fl.ClientSpec(SpeechExitModel(cfg, exits), optax.sgd(0.1), batch_size=4)
  batch = fl.ClientData(jnp.ones((4, 50, C)), jnp.ones((4, 50), bool), jnp.zeros(4, jnp.int32),
                        jnp.ones(4, bool))
  flops = {}
  for d in (3, 12):
    sliced = spec.slice_params(params, d)
    flops[d] = accounting.step_flops(functools.partial(fl.client_step, spec, d), sliced,
                                     fl.client_init(spec, sliced), batch)
  ratio = flops[3] / flops[12]
  # 3/12 of the layers plus the shared projection, positional conv and heads (measured: 0.265)
  assert 0.24 < ratio < 0.29, (ratio, flops)


SHARDED = textwrap.dedent("""
  import sys, jax, numpy as np
  from jax.sharding import Mesh
  assert len(jax.devices()) == 8, jax.devices()
  import test_federated_round as t
  from fedexit_jax import federated as fl
  cfg, spec, state, dataset, depths = t.setup.__wrapped__()
  mesh = Mesh(np.array(jax.devices()), ("clients",))
  spec8 = fl.RoundSpec(spec.client, weighting=spec.weighting, depth_levels=spec.depth_levels,
                       chunk_size=spec.chunk_size, mesh=mesh)
  new, m = fl.run_round(state, fl.cohort_from_dataset(dataset, t.IDS, depths), spec8)
  leaves = jax.tree.leaves(new.params)
  assert len(leaves[0].sharding.device_set) == 8
  # the client data resident on the devices: split over the 8 devices (12 clients padded to 16)
  split = fl.place_dataset(dataset, spec8, shard=True)
  assert split.data.inputs.shape[0] == 16 and len(split.data.inputs.sharding.device_set) == 8
  new_s, m_s = fl.run_round(state, fl.cohort_from_dataset(split, t.IDS, depths), spec8)
  np.savez(sys.argv[1], *[np.asarray(x) for x in leaves], loss=np.asarray(m["loss"]),
           loss_split=np.asarray(m_s["loss"]),
           **{f"split_{i}": np.asarray(x) for i, x in enumerate(jax.tree.leaves(new_s.params))})
  print("SHARDED_OK")
""")


def test_one_device_and_eight_simulated_devices_agree(first_round, tmp_path):
  # chunk 4 on one device against chunk 8 (4 rounded up to the 8 devices) sharded over 8
  # simulated CPU devices, in a fresh process (the device count is fixed at jax start-up); with
  # the cohort copied per round, and with the dataset resident and split over the 8 devices.
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
             JAX_PLATFORMS="cpu", JAX_DISABLE_MOST_OPTIMIZATIONS="1")
  here = os.path.dirname(os.path.abspath(__file__))
  env["PYTHONPATH"] = os.pathsep.join(
      [p for p in (env.get("PYTHONPATH"), here, os.path.dirname(here)) if p])
  out = tmp_path / "sharded.npz"
  r = subprocess.run([sys.executable, "-c", SHARDED, str(out)], env=env, capture_output=True,
                     text=True, timeout=600)
  assert "SHARDED_OK" in r.stdout, r.stdout[-2000:] + r.stderr[-4000:]
  _, (new, m) = first_round
  got = np.load(out)
  for i, leaf in enumerate(jax.tree.leaves(new.params)):
    np.testing.assert_allclose(got[f"arr_{i}"], np.asarray(leaf), atol=2e-6, rtol=1e-5)
    np.testing.assert_allclose(got[f"split_{i}"], np.asarray(leaf), atol=2e-6, rtol=1e-5)
  np.testing.assert_allclose(got["loss"], np.asarray(m["loss"]), rtol=1e-5)
  np.testing.assert_allclose(got["loss_split"], np.asarray(m["loss"]), rtol=1e-5)


def test_bad_round_inputs_fail_before_any_work(setup):
  _, spec, state, dataset, depths = setup
  with pytest.raises(ValueError, match="weighting scheme 'avg'"):
    fl.RoundSpec(spec.client, weighting="avg")
  with pytest.raises(ValueError, match="depth 3 is not an exit"):
    fl.RoundSpec(spec.client, depth_levels=(2, 3))
  with pytest.raises(ValueError, match=r"depths \[4\] outside"):
    fl.run_round(state, fl.cohort_from_dataset(dataset, [0, 1], depths),
                 fl.RoundSpec(spec.client, depth_levels=(2,)))
  with pytest.raises(ValueError, match="'homogeneous' needs every client at one depth"):
    fl.run_round(state, fl.cohort_from_dataset(dataset, [0, 1], depths),
                 fl.RoundSpec(spec.client, weighting="homogeneous", depth_levels=(2, 4)))


def test_time_masking_round_equals_per_client_loop_and_changes_training(setup):
  """SpecAugment-style time masking draws the same masks in the vectorised round as in the
  per-client loop (keys from each client's round key), and it changes what is trained."""
  import dataclasses  # pylint: disable=import-outside-toplevel
  _, spec, state, dataset, depths = setup
  plain = dataclasses.replace(spec, client=dataclasses.replace(spec.client,
                                                               optimizer=optax.sgd(0.02)))
  masked = dataclasses.replace(plain, client=dataclasses.replace(plain.client, time_mask_prob=0.3,
                                                                 time_mask_span=2))
  cohort = fl.cohort_from_dataset(dataset, IDS, depths)
  new, m = fl.run_round(state, cohort, masked)
  ref, mr = fl.run_round_reference(state, cohort, masked)
  assert all(np.all(np.isfinite(np.asarray(x))) for x in jax.tree.leaves(new.params))
  assert_trees_close(new.params, ref.params)
  np.testing.assert_allclose(m["loss"], mr["loss"], rtol=1e-5)
  unmasked, _ = fl.run_round(state, cohort, plain)
  assert any(bool(jnp.any(jnp.abs(a - b) > 1e-4))
             for a, b in zip(jax.tree.leaves(new.params), jax.tree.leaves(unmasked.params)))


def test_default_chunk_grows_with_the_width_on_cpu(setup):
  """CPU: one client per device at a time below 256 wide, two from 256 (measured in
  benchmarks/cpu_options.py); accelerators 16; a model without a width keeps 1; an explicit
  chunk_size wins; the chunk never exceeds the cohort (rounded up to the devices)."""
  _, spec, _, _, _ = setup
  assert simulate.default_chunk_size("cpu", 128) == 1
  assert simulate.default_chunk_size("cpu", 255) == 1
  assert simulate.default_chunk_size("cpu", 256) == 2
  assert simulate.default_chunk_size("cpu", 768) == 2
  assert simulate.default_chunk_size("cpu", None) == 1
  assert simulate.default_chunk_size("gpu", 128) == 16
  n = jax.device_count()
  narrow = fl.RoundSpec(spec.client, depth_levels=(2, 4))  # 32 wide
  assert spec.client.model.width == 32
  assert simulate.effective_chunk_size(narrow, 64) == n
  wide_model = SpeechExitModel(mconfig.small(hidden_size=256, intermediate_size=512,
                                             num_attention_heads=4, num_hidden_layers=4), EXITS)
  import dataclasses  # pylint: disable=import-outside-toplevel
  wide = fl.RoundSpec(dataclasses.replace(spec.client, model=wide_model), depth_levels=(2, 4))
  assert simulate.effective_chunk_size(wide, 64) == 2 * n
  assert simulate.effective_chunk_size(wide, 1) == n  # a one-client cohort: no padding client
  assert LayoutOnly(EXITS, 4).width is None
  assert simulate.effective_chunk_size(spec, 64) == -(-4 // n) * n  # explicit chunk_size 4
