"""`ltbench draw`: write the draw of a run (its training, validation and meta subsets) to a file
that `ltbench train --draw FILE` trains on elsewhere (`ltbench.data.draws`).

The draw is made again from the run's config.yaml (the same data settings and seed give the
same subsets: drawing is deterministic), and checked against the fingerprints in the run's
result.json when it has finished, so that the file holds the images the run trained on. The
subsets are written as the run's last stage used them: the meta set (meta-learning methods)
apart, the training and validation splits without its images.
"""

from __future__ import annotations

import json
from pathlib import Path

from ltbench.data.draws import DRAW_SETTINGS, subset_ids, write_draw
from ltbench.engine.config import load_yaml, resolve
from ltbench.engine.record import data_fingerprints
from ltbench.engine.stages import plan_stages
from ltbench.engine.step import hold_out_meta, load_run_data
from ltbench.errors import LtbenchError
from ltbench.runfiles import CONFIG_FILE, RESULT_FILE


def export_draw(run_dir: Path, out: Path) -> tuple[Path, dict[str, str | None]]:
    """Write the draw of the run in `run_dir` to `out`; returns the file and the fingerprints
    of the subsets the run trained on."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_FILE).is_file():
        raise LtbenchError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    cfg = resolve(load_yaml(run_dir / CONFIG_FILE))
    stage = plan_stages(cfg)[-1]  # the stage whose result is the run's
    data = load_run_data(cfg, download=False, meta_per_class=stage.meta_per_class)
    bundle, meta_set, meta_source = hold_out_meta(data, stage.meta_per_class, cfg.seed)
    trained = data_fingerprints(bundle, meta_set)
    if (run_dir / RESULT_FILE).is_file():
        recorded = json.loads((run_dir / RESULT_FILE).read_text()).get("fingerprints") or {}
        for name, digest in recorded.items():
            if digest is not None and trained.get(name) != digest:
                raise LtbenchError(
                    f"{run_dir}: the {name} subset drawn again from {CONFIG_FILE} is not the "
                    f"one the run recorded ({digest[:12]} in {RESULT_FILE}, now "
                    f"{(trained.get(name) or 'none')[:12]}): the data under data_root changed"
                )
    # the subsets as the run used them: training without the meta set's images, the
    # validation split without them, the meta set (a run on the draw takes it as it is)
    subsets = {
        "train": subset_ids(bundle.train),
        "val": subset_ids(bundle.val),
        "meta": subset_ids(meta_set),
    }
    if subsets["train"] is None:
        raise LtbenchError(f"dataset {cfg.dataset!r} does not name its images: no draw to write")
    settings = {k: getattr(cfg, k) for k in DRAW_SETTINGS}
    path = write_draw(out, cfg.dataset, settings, subsets, meta_source)
    return path, trained
