"""One rank of a multi-process ``r2m-hf tune`` launch, instrumented for ``test_processes.py``.

``python -m torch.distributed.run --standalone --nproc_per_node N tests/tuning/launch_tune.py LOG tune ARGS...`` runs
the CLI in every rank exactly as ``torchrun -m r2m_hf tune ARGS...`` does, and appends JSON lines to ``LOG.rankR``:
``{"scored": rows this rank passed through the model, "of": rows of the chunk}`` for every chunk it scores, and
``{"wrote": [files]}`` when it writes the leaderboard.
"""

from __future__ import annotations

import json
import os
import sys


def main() -> int:
    log, args = sys.argv[1], sys.argv[2:]
    from r2m_hf.cli import main as cli
    from r2m_hf.tuning import tuner, validation

    path = f"{log}.rank{os.environ.get('RANK', '0')}"

    def note(**event) -> None:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(event) + "\n")

    score_images, write_outputs = validation.score_images, tuner.write_outputs

    def counted(model, processor, data, *a, **k):
        seen = []
        hook = model.register_forward_pre_hook(
            lambda module, args, kwargs: seen.append(int(kwargs["pixel_values"].shape[0])), with_kwargs=True
        )
        try:
            return score_images(model, processor, data, *a, **k)
        finally:
            hook.remove()
            note(scored=sum(seen), of=len(data))

    def written(result, spaces, **k):
        files = write_outputs(result, spaces, **k)
        note(wrote=sorted(str(p) for p in files.values()))
        return files

    validation.score_images, tuner.write_outputs = counted, written
    return cli(args)


if __name__ == "__main__":
    sys.exit(main())
