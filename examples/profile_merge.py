"""Profile a method's merge in-process, apart from the process start (imports, layout) and the output writing.

It plans the merge of a recipe (untimed: sources, layout, checks), then times, in this process and with the thread
count set explicitly:

* ``read``: one pass of the engine's per-tensor read loop (``iter_slots``: base + N specialists per tensor);
* ``merge``: every pass of the method through the engine (``run_passes``: statistics passes + merge pass, reads
  included), the merged tensors discarded;

and with ``--profile`` prints the top items of a cProfile of the ``merge`` part. Inputs come from
``examples/bench_merge.py``'s synthetic specialists (written once under ``--workdir`` and reused)::

    python examples/profile_merge.py --shape vit-b16 --n 3 --method r2m --threads 2 --profile

On a machine shared with other jobs, waiting OpenMP threads spin and slow a multi-threaded run several-fold: set
``OMP_WAIT_POLICY=PASSIVE``, or measure with ``--threads 1 --cpu-clock``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))

from bench_merge import SHAPES, _parse_method, build_inputs  # noqa: E402


def plan(folders: list[Path], method: str, parameters: dict):
    """The merge plan of `method` over [base, specialists…] (sources resolved, layout built, checks run)."""
    from r2m_hf import MergeConfig
    from r2m_hf.planning import plan_merge

    config = MergeConfig(
        merge_method=method,
        base_model=str(folders[0]),
        models=[{"model": str(f)} for f in folders[1:]],
        parameters=parameters,
    )
    return plan_merge(config)


def time_read(merge_plan) -> tuple[float, float]:
    """(wall, CPU) seconds of one pass of the engine's read loop over every backbone tensor."""
    from r2m_hf.running import iter_slots

    start, cpu = time.perf_counter(), time.process_time()
    for _ in iter_slots(merge_plan, merge_plan.layout.backbone_names, torch.device("cpu"), "read", False):
        pass
    return time.perf_counter() - start, time.process_time() - cpu


def time_merge(merge_plan, profiler: cProfile.Profile | None = None) -> tuple[float, float]:
    """(wall, CPU) seconds of every pass of the method through the engine (reads included, merged tensors discarded)."""
    from r2m_hf.engine import run_passes
    from r2m_hf.running import iter_slots

    method = merge_plan.method()
    names = merge_plan.layout.backbone_names

    def slots(pass_index: int):
        return iter_slots(merge_plan, names, torch.device("cpu"), f"pass {pass_index}", False)

    start, cpu = time.perf_counter(), time.process_time()
    if profiler is not None:
        profiler.enable()
    for _ in run_passes(method, slots):
        pass
    if profiler is not None:
        profiler.disable()
    return time.perf_counter() - start, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="vit-b16")
    parser.add_argument("--n", type=int, default=3)
    parser.add_argument("--method", default="r2m", help="a method, or `name:key=value,…` with parameters")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="time the merge this many times (best is shown)")
    parser.add_argument("--profile", action="store_true", help="print the top items of a cProfile of one merge")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--cpu-clock", action="store_true", help="profile process CPU time instead of wall time")
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "r2m-bench-merge")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    folders = build_inputs(args.workdir, args.shape, args.n)
    method, parameters = _parse_method(args.method)
    start = time.perf_counter()
    merge_plan = plan(folders, method, parameters)
    print(f"plan: {time.perf_counter() - start:.2f} s (untimed below)")
    time_read(merge_plan)  # warm the page cache
    print("read (one pass): {:.2f} s wall, {:.2f} s CPU".format(*time_read(merge_plan)))
    passes = merge_plan.method().statistics_passes + 1
    wall, cpu = min(time_merge(merge_plan) for _ in range(args.repeat))
    print(f"merge ({args.method}, {passes} pass(es), reads included): {wall:.2f} s wall, {cpu:.2f} s CPU")
    if args.profile:
        # On a shared machine the CPU clock (--cpu-clock) is steadier than the wall clock.
        profiler = cProfile.Profile(time.process_time) if args.cpu_clock else cProfile.Profile()
        wall, cpu = time_merge(merge_plan, profiler)
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out).strip_dirs()
        stats.sort_stats("tottime").print_stats(args.top)
        clock = "CPU" if args.cpu_clock else "wall"
        print(f"cProfile ({clock} clock) of one merge ({wall:.2f} s wall, {cpu:.2f} s CPU under it), by own time:")
        print("\n".join(out.getvalue().splitlines()[4:]))


if __name__ == "__main__":
    main()
