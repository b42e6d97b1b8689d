"""Run a prepared notebook and write back what happened: ``python -m
autograder.grading.run_notebook RUN.json``.

The class grader runs this inside the sandbox (:mod:`.sandbox`), with the submission's private
copy as its only writable folder: the course's one executor (:mod:`.engine`) starts the kernel
there, runs every cell under the limits, and draws the "yours vs expected" pictures at the end.
It writes the executed notebook, what the run did (cells run, interrupted, the kernel's death)
and the pictures into the scratch folder, and nothing else. None of it is trusted: the grader
reads it back with size limits and judges the scores itself from the probes' records.

RUN.json: ``notebook`` (path relative to RUN.json's folder), ``limits`` (:class:`.engine.Limits`),
``test_cells`` (indices), ``pictures`` (the (grade_id, check, function name) to draw),
``out`` (folder for the results, relative too).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Dict, List


def main(argv: List[str]) -> int:
    # jsonschema (under nbformat) builds an IRI grammar on import when ``rfc3987_syntax`` is
    # installed (the Jupyter stack pulls it in): about 1 s per sandboxed run, for a check that
    # notebook validation never uses. This process has no other use for it.
    sys.modules.setdefault("rfc3987_syntax", None)  # type: ignore[arg-type]
    import nbformat

    from . import engine, lifeline

    lifeline.die_with_parent()  # the worker (or the sandbox's init): when it goes, so do we
    from .judging import safe_id
    from .worker import draw_pictures

    run_file = Path(argv[0]).resolve()
    base = run_file.parent
    run = json.loads(run_file.read_text(encoding="utf-8"))
    nb_path = base / run["notebook"]
    out = base / run["out"]
    out.mkdir(parents=True, exist_ok=True)
    nb = nbformat.read(str(nb_path), as_version=4)
    limits = engine.Limits(**run["limits"])
    pictures: Dict[str, str] = {}

    def after(evaluate) -> None:
        # Pictures only for the steps whose probes found something wrong (their own, untrusted
        # verdict: a hint that saves drawing pictures nobody sees; the judge decides the points).
        obs = nb_path.parent / run.get("observations", ".grading-observations")
        wanted = [w for w in run.get("pictures") or () if any(obs.glob(f"{safe_id(w[0])}-*.failed"))]
        if wanted:
            pictures.update(draw_pictures(nb, evaluate, wanted=wanted))

    ex: Dict[str, Any]
    try:
        done = engine.execute(nb, nb_path.parent, limits, env=None, test_cells=set(run["test_cells"]),
                              after=after)
        ex = {k: v for k, v in vars(done).items()}
    except engine.KernelFailed as e:
        ex = {"kernel_failed": str(e)}
    nbformat.write(nb, str(out / "executed.ipynb"))
    (out / "execution.json").write_text(json.dumps(ex, default=str), encoding="utf-8")
    (out / "pictures.json").write_text(json.dumps(pictures), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
