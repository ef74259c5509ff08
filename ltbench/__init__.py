"""ltbench: a benchmark harness for long-tailed visual recognition losses.

Importing `ltbench` is light (no torch): the names below come from the registry, which loads
the loss plugins, and torch with them, only when a loss is first looked up.
"""

from ltbench.sdk.registry import LossSpec, build_loss, list_losses, register

__version__ = "0.1.0"

__all__ = ["LossSpec", "__version__", "build_loss", "list_losses", "register"]
