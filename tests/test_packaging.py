"""What a wheel ships: every package folder, and configs/ (the one copy) as fedexit_jax.configs,
so an installed package runs the default and every config the README names."""
from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from fedexit_jax import config_utils as cu

REPO = Path(__file__).resolve().parents[1]


def test_pyproject_lists_every_package_and_maps_configs():
  tool = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
  found = sorted(".".join(p.parent.relative_to(REPO).parts)
                 for p in (REPO / "fedexit_jax").rglob("__init__.py"))
  assert sorted(p for p in tool["packages"] if p != "fedexit_jax.configs") == found
  assert tool["package-dir"] == {"fedexit_jax.configs": "configs"}
  assert (REPO / "configs" / "__init__.py").is_file()


def test_configs_are_found_through_the_package(tmp_path, monkeypatch):
  assert cu.configs_dir() == REPO / "configs"
  monkeypatch.chdir(tmp_path)  # outside a clone, `configs/NAME.py` means the shipped one
  for name in ("default.py", "paper_kws12.py", "paper_kws35.py", "smoke.py", "kws12.py",
               "kws35.py", "sid.py", "er.py", "asr.py", "asr_long.py"):
    config = cu.load_config(f"configs/{name}")
    assert sorted(cu.flat_keys(config)) == sorted(cu.flat_keys(cu.default_config())), name
  with pytest.raises(FileNotFoundError,
                     match="shipped configs: configs/asr.py, configs/asr_long.py, configs/default.py"):
    cu.load_config("configs/nope.py")
