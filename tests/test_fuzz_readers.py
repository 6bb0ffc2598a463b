"""A few hundred inputs of the reader fuzz harness (``benchmarks/fuzz_readers.py``; its full
run takes 10,000 per family): seeded mutations of cuts of the real files through
``geneinfer convert`` (and some through ``geneinfer predict``) give no traceback, crash, hang
or silent change."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

HARNESS = Path(__file__).resolve().parents[1] / "benchmarks" / "fuzz_readers.py"


def _harness():
    spec = importlib.util.spec_from_file_location("fuzz_readers", HARNESS)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def test_mutated_inputs_give_only_correct_output_or_clean_errors(shared):
    fz = _harness()
    results = fz.run(list(fz.FAMILIES), 45, seed=2024, workers=2, timeout=60, predict_every=9,
                     quiet=True)
    table = fz.table(results)
    assert sum(sum(c.values()) for c in results.values()) == 7 * (45 + 5)
    bad = {family: {o: n for o, n in counts.items() if o in fz.BAD}
           for family, counts in results.items()}
    assert not any(bad.values()), table
    # the mutations reach both outcomes in every family (the harness is not trivially clean)
    for family in fz.FAMILIES:
        assert results[family]["correct"] and results[family]["clean error"], table
