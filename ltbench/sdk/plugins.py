"""The one registration mechanism of every extension point: a `Registry` of specs by name.

Each kind of extension has its spec type and its entry-point group:

    losses            `LossSpec`        ltbench.losses     (ltbench.sdk.registry)
    datasets          `DatasetSpec`     ltbench.datasets   (ltbench.sdk.datasets)
    post-hoc rules    `PosthocRule`     ltbench.posthoc    (ltbench.sdk.posthoc)

ltbench's own extensions and a third-party package's register the same way: an entry point of
the group names a module-level spec (or a list of specs), e.g. in a plugin's pyproject.toml

    [project.entry-points."ltbench.datasets"]
    my-data = "my_package.data:SPEC"

`register(spec)` adds one at run time (tests, notebooks). Entry points are loaded once, on
first use; a broken plugin is skipped with a warning naming it, a name registered twice is an
error, and an unknown name is answered with the list of known ones. A stage behaviour (a
method's own network, step or samplers) is part of its loss's `stages` (ltbench.sdk.stages).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Generic, TypeVar

from ltbench.errors import LtbenchError

Spec = TypeVar("Spec")


class Registry(Generic[Spec]):
    """The specs of one extension point, by name, and its entry-point group."""

    def __init__(
        self, kind: str, plural: str, group: str, spec_type: type, *, sort_known: bool = True
    ):
        self.kind = kind  # "loss": names the spec in errors and warnings
        self.plural = plural  # "losses"
        self.group = group  # the entry-point group, "ltbench.losses"
        self.spec_type = spec_type
        self.sort_known = sort_known  # list the known names sorted (else in registration order)
        self.specs: dict[str, Spec] = {}
        self.loaded = False

    def register(self, spec: Spec) -> Spec:
        """Add a spec; a second spec under the same name is an error, not a silent override."""
        if not isinstance(spec, self.spec_type):
            raise TypeError(f"expected a {self.spec_type.__name__}, got {type(spec).__name__}")
        name = spec.name  # type: ignore[attr-defined]
        if name in self.specs and self.specs[name] is not spec:
            raise LtbenchError(f"{self.kind} {name!r} is registered twice")
        self.specs[name] = spec
        return spec

    def _specs_from(self, obj: Any) -> Iterable[Spec]:
        if isinstance(obj, self.spec_type):
            return [obj]
        if isinstance(obj, list | tuple) and all(isinstance(s, self.spec_type) for s in obj):
            return obj
        kind = self.spec_type.__name__
        raise TypeError(f"expected a {kind} or a list of {kind}, got {type(obj).__name__}")

    def load_entry_points(self, force: bool = False) -> None:
        """Import every plugin of the group once; skip a broken one with a warning."""
        if self.loaded and not force:
            return
        from importlib.metadata import entry_points  # here: `import ltbench` stays fast

        self.loaded = True
        for ep in entry_points(group=self.group):
            try:
                specs = self._specs_from(ep.load())
            except Exception as exc:  # a broken third-party plugin must not take ltbench down
                warnings.warn(
                    f"ltbench: skipping {self.kind} plugin {ep.name!r} ({ep.value}): {exc}",
                    stacklevel=2,
                )
                continue
            for spec in specs:
                if self.specs.get(spec.name) is spec:  # type: ignore[attr-defined]
                    continue
                try:
                    self.register(spec)
                except LtbenchError as exc:
                    warnings.warn(
                        f"ltbench: skipping {self.kind} plugin {ep.name!r}: {exc}", stacklevel=2
                    )

    def get(self, name: str) -> Spec:
        """The spec registered under `name`, or a one-line error listing the known names."""
        self.load_entry_points()
        try:
            return self.specs[name]
        except KeyError:
            names = sorted(self.specs) if self.sort_known else list(self.specs)
            known = ", ".join(names) or "(none)"
            raise LtbenchError(
                f"unknown {self.kind} {name!r}; known {self.plural}: {known}"
            ) from None

    def names(self) -> list[str]:
        """Every registered name, in registration order."""
        self.load_entry_points()
        return list(self.specs)

    def view(self) -> Mapping[str, Spec]:
        """A read-only mapping of the registered specs that loads the entry points first."""
        return _View(self)


class _View(Mapping):
    def __init__(self, registry: Registry):
        self._registry = registry

    def __getitem__(self, name: str):
        self._registry.load_entry_points()
        return self._registry.specs[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._registry.names())

    def __len__(self) -> int:
        return len(self._registry.names())
