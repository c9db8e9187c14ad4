"""Shared test fixtures."""
import jax
import pytest


@pytest.fixture(scope="module")
def fast_compiles():
  """Tiny programs take seconds to optimise and microseconds to run: skip XLA's heavy
  optimisation passes for one module (the numerics are the same to float tolerance)."""
  old = jax.config.read("jax_disable_most_optimizations")
  jax.config.update("jax_disable_most_optimizations", True)
  yield
  jax.config.update("jax_disable_most_optimizations", old)
