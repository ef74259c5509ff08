"""Post-hoc decision rules as plugins: a `PosthocRule` per rule, registered by name (entry-point
group `ltbench.posthoc`, the mechanism of `ltbench.sdk.plugins`). `ltbench eval RUN_DIR` applies
them to a finished run without retraining (ltbench.engine.posthoc).

A rule is a function `logits(ctx, tau) -> logits` of one chunk of a split: `ctx` gives the
run's classifier scores of the chunk's backbone features (`ctx.scores()`, or `ctx.scores(tau)`
with each weight row divided by its norm to the power tau), the loss plugin's evaluation and
training logits of scores (`ctx.eval_logits(s)`, `ctx.train_logits(s)`), the log prior of the
training classes (`ctx.log_prior()`) and the run itself (`ctx.run`). The argmax of the logits
is the rule's prediction, their softmax its confidences (ECE). A rule with `tuned=True` takes
its tau from the validation split (ltbench.engine.posthoc.choose_tau), others get tau=None.

ltbench's own rules are registered through the entry point `built-in` of the group; a
third-party package's the same way, e.g.

    [project.entry-points."ltbench.posthoc"]
    my-rule = "my_package.rules:RULE"

Importing this module does not import torch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ltbench.sdk.plugins import Registry

ENTRY_POINT_GROUP = "ltbench.posthoc"


@dataclass(frozen=True)
class PosthocRule:
    """What the registry knows about one post-hoc rule."""

    name: str
    logits: Callable[[Any, float | None], Any]  # logits(ctx, tau) of one chunk of features
    ece_logits: str  # which logits its confidences come from, as recorded in result.json
    tuned: bool = False  # tau chosen on the validation split
    description: str = ""
    # note(run) -> a sentence recorded with the rule's result where it applies, else None
    note: Callable[[Any], str | None] | None = None


RULES: Registry[PosthocRule] = Registry(
    "post-hoc rule", "post-hoc rules", ENTRY_POINT_GROUP, PosthocRule
)


def register_rule(rule: PosthocRule) -> PosthocRule:
    """Add a rule at run time (a name registered twice is an error)."""
    return RULES.register(rule)
