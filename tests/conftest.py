"""Shared test fixtures, and the persistent compilation cache for the whole session."""
import os

import jax
import pytest

from fedexit_jax import runtime


def pytest_configure(config):
  """Compiled programs are kept between sessions, as `fedexit run` keeps them: in
  $FEDEXIT_COMPILATION_CACHE, else <$FEDEXIT_CACHE or ~/.cache/fedexit_jax>/xla (outside the
  checkout, so a fresh clone on the same machine reuses them; `FEDEXIT_COMPILATION_CACHE=off`
  compiles everything). The folder is pinned in the environment before anything compiles, so
  tests that point $FEDEXIT_CACHE elsewhere, and their subprocesses, share it. A program loaded
  from disk is still traced and still counted by `jit(f)._cache_size()`, so the tests that prove
  nothing recompiles keep their meaning (tests/test_runtime.py)."""
  del config
  folder = runtime.resolve_compilation_cache("auto")
  os.environ[runtime.CACHE_ENV] = str(folder) if folder is not None else "off"
  runtime.use_compilation_cache("auto")


@pytest.fixture(scope="module")
def fast_compiles():
  """Tiny programs take seconds to optimise and microseconds to run: skip XLA's heavy
  optimisation passes for one module (the numerics are the same to float tolerance)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)


@pytest.fixture(autouse=True)
def _release_programs_when_crowded():
  """A test worker runs hundreds of tests in one process, and XLA:CPU keeps each compiled
  program's code in memory regions of its own: without this, a worker passes the kernel's cap
  (vm.max_map_count) after ~430 tests and dies of a segfault inside XLA
  (runtime.release_programs_if_crowded says more)."""
  yield
  runtime.release_programs_if_crowded()
