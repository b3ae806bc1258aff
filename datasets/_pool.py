"""Runs independent jobs (writing a phantom patient, preprocessing a frame) in a process pool.

Each job writes its own files, so the result does not depend on the order or on
the number of processes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed


def run_tasks(
    tasks: Sequence[Callable[[], object]],
    *,
    workers: int | None = None,
    parallel_above: int = 8,
    progress: bool = False,
    desc: str = "",
    unit: str = "it",
) -> None:
    """Calls every task, in ``workers`` processes when there are several tasks.

    ``workers=None``: up to 2 processes when there are more than ``parallel_above``
    tasks, else this process. A task's exception is raised here.
    """
    if workers is None:
        workers = min(2, os.cpu_count() or 1) if len(tasks) > parallel_above else 1
    bar = None
    if progress and tasks:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tasks), desc=desc, unit=unit)
    if workers > 1 and len(tasks) > 1:
        # fork: workers need no re-import of __main__ and run numpy/scipy/nibabel only
        ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
        with ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            for future in as_completed([pool.submit(task) for task in tasks]):
                future.result()
                if bar is not None:
                    bar.update()
    else:
        for task in tasks:
            task()
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
