"""The plugin SDK: everything a loss or method plugin may import from ltbench.

A plugin package (ours in `losses/` and `baselines/`, or a third party's) depends on this
package and on `ltbench.errors` only; the import contracts in `pyproject.toml` keep it so.
"""
