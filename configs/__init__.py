"""The run configs (`get_config()` files); installed as the package `fedexit_jax.configs`."""
