"""Objectives (what a client minimises given the exits' outputs): CTC's masking and normalisation
by hand, DepthFL distillation reduced to the classifier's formula, and a CTC model with frame
heads through the vectorised round against the per-client reference loop, evaluation, learning."""
import jax
import numpy as np
import optax
import pytest

from fedexit_jax import federated as fl
from fedexit_jax import models, scoring
from fedexit_jax.federated import objective as obj_lib
from fedexit_jax.models import config as mconfig, heads, wav2vec2
from fedexit_jax.speech_model import SpeechExitModel

pytestmark = pytest.mark.usefixtures("fast_compiles")

EXITS = (2, 4)
VOCAB = 6  # blank + 5 symbols
N, T, C, U = 6, 12, 16, 3


def test_ctc_ignores_padded_frames_and_divides_by_label_length():
  rs = np.random.RandomState(0)
  logits = rs.randn(2, 3, T, VOCAB).astype(np.float32)  # [n exits, B, T, V]
  mask = np.arange(T)[None] < np.array([[T], [7], [9]])
  labels = np.array([[1, 2, 3], [4, 4, 0], [5, 0, 0]], np.int32)  # 0 = blank = padding
  got = np.asarray(fl.CTC().example_loss((logits, mask), labels))
  raw = np.asarray(fl.CTC(per_token=False).example_loss((logits, mask), labels))
  np.testing.assert_allclose(got, raw / np.array([3.0, 2.0, 1.0]), rtol=1e-6)
  for b, (frames, n_lab) in enumerate([(T, 3), (7, 2), (9, 1)]):  # truncate instead of masking
    for e in range(2):
      want = optax.ctc_loss(logits[e, b:b + 1, :frames], np.zeros((1, frames)),
                            labels[b:b + 1, :n_lab], np.zeros((1, n_lab)))
      np.testing.assert_allclose(raw[e, b], np.asarray(want)[0], rtol=1e-5)


def test_distillation_on_class_logits_is_the_pairwise_kl_mean():
  rs = np.random.RandomState(1)
  logits = rs.randn(3, 4, 5).astype(np.float32)
  example_mask = np.array([True, True, False, True])
  got = float(obj_lib.distillation(fl.CrossEntropy(), logits, example_mask, 2.0))
  p = jax.nn.softmax(logits / 2.0, axis=-1)
  kl = lambda t, s: np.sum(p[t] * (np.log(p[t]) - np.log(p[s])), axis=-1)  # KL(teacher || student)
  pairs = [kl(j, i) for i in range(3) for j in range(3) if i != j]
  want = 4.0 * np.mean(np.sum(pairs, axis=0)[example_mask] / 2)
  np.testing.assert_allclose(got, want, rtol=1e-5)
  assert float(obj_lib.distillation(fl.CrossEntropy(), logits[:1], example_mask, 2.0)) == 0.0


def tiny_config():
  return mconfig.small(hidden_size=32, intermediate_size=64, num_attention_heads=2,
                       conv_dim=(C,) * 7, num_hidden_layers=4, num_conv_pos_embeddings=4,
                       num_conv_pos_embedding_groups=2)


def ctc_dataset(num_clients, seed=0):
  """Frames whose features announce the symbol they carry, so a CTC head can learn it."""
  rs = np.random.RandomState(seed)
  labels = rs.randint(1, VOCAB, (num_clients, N, U)).astype(np.int32)
  labels[:, :, -1] *= rs.rand(num_clients, N) < 0.5  # some sequences shorter (0 = padding)
  feats = 0.3 * rs.randn(num_clients, N, T, C).astype(np.float32)
  for u in range(U):  # symbol u spans frames [4u, 4u + 3)
    onehot = np.eye(C, dtype=np.float32)[labels[..., u]] * 3.0 * (labels[..., u] > 0)[..., None]
    feats[:, :, 4 * u:4 * u + 3] += onehot[:, :, None]
  frames = np.where(labels[..., -1] > 0, T, 9)
  sizes = rs.randint(2, N + 1, num_clients)
  return fl.ClientData(feats, np.arange(T)[None, None] < frames[..., None], labels,
                       np.arange(N)[None] < sizes[:, None])


@pytest.fixture(scope="module")
def ctc_setup():
  cfg = tiny_config()
  params, _ = models.split_params(wav2vec2.init_params(cfg, jax.random.key(0)),
                                  heads.init_heads(jax.random.key(1), "frames", 32, VOCAB,
                                                   len(EXITS)))
  model = SpeechExitModel(cfg, EXITS, head="frames")
  return model, params, ctc_dataset(6)


@pytest.mark.parametrize("loss", ["last", "distill"])
def test_ctc_round_matches_the_per_client_reference(ctc_setup, loss):
  model, params, dataset = ctc_setup
  client = fl.ClientSpec(model, optax.sgd(0.05), objective=fl.CTC(), loss=loss, batch_size=3)
  spec = fl.RoundSpec(client, weighting="paper", depth_levels=(2, 4), chunk_size=2)
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(2))
  cohort = fl.cohort_from_dataset(dataset, [0, 1, 2, 3, 4, 5], [2, 4, 2, 4, 4, 2])
  got, m = fl.run_round(state, cohort, spec)
  want, m_ref = fl.run_round_reference(state, cohort, spec)
  assert np.all(np.asarray(m["finite"]))
  np.testing.assert_allclose(np.asarray(m["loss"]), np.asarray(m_ref["loss"]), rtol=2e-5)
  for a, b in zip(jax.tree.leaves(got.params), jax.tree.leaves(want.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)


def test_ctc_model_learns_and_evaluates_to_best_paths(ctc_setup):
  model, params, dataset = ctc_setup
  client = fl.ClientSpec(model, optax.adam(3e-3), objective=fl.CTC(), loss="sum", batch_size=3,
                         local_epochs=3)
  spec = fl.RoundSpec(client, weighting="paper", depth_levels=(4,), chunk_size=2)
  state = fl.init_server_state(params, spec.server_optimizer, jax.random.key(3))
  flat = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), dataset)
  real = np.asarray(flat.example_mask)

  def test_loss(p):
    ev = fl.evaluate(model, p, flat.inputs[real], flat.input_mask[real], flat.labels[real],
                     batch_size=8, objective=fl.CTC())
    return ev
  before = test_loss(state.params)
  for r in range(15):
    cohort = fl.cohort_from_dataset(dataset, np.arange(6), [4] * 6)
    state, _ = fl.run_round(state, cohort, spec)
  after = test_loss(state.params)
  assert before["best_path"].shape == (2, int(real.sum()), T)
  assert np.all(before["best_path"][:, ~np.asarray(flat.input_mask[real])] == -1)  # padded frames
  assert after["loss"][-1] < 0.5 * before["loss"][-1], (before["loss"], after["loss"])
  labels = np.asarray(flat.labels[real])
  refs = [" ".join(str(x) for x in row if x) for row in labels]
  hyp_ids = scoring.ctc_greedy_decode(after["best_path"][-1], after["best_path"][-1] >= 0)
  hyps = [" ".join(str(x) for x in h) for h in hyp_ids]
  assert scoring.wer(refs, hyps) < 0.5  # chance is ~1.0: the symbols were learned
