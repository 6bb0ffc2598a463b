"""The allocator setting for training: large freed blocks are reused, not faulted in again."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

PROBE = textwrap.dedent(
    """
    import resource
    import numpy as np
    from geneinfer.utils.memory import reuse_freed_memory
    applied = reuse_freed_memory()
    np.ones(100 * 2**20 // 8)  # first use of the memory: faults either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):  # what a training step does: a large temporary, used, freed
        a = np.ones(100 * 2**20 // 8)
        del a
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    print(applied, faults)
    """
)


def _probe(setting: str) -> tuple[bool, int]:
    env = {**os.environ, "GENEINFER_MALLOC_TUNING": setting}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    return out[0] == "True", int(out[1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_large_temporaries_are_reused_without_page_faults():
    tuned_applied, tuned = _probe("1")
    plain_applied, plain = _probe("0")
    assert tuned_applied and not plain_applied
    # 20 x 100 MB freshly mapped: thousands of faults even with numpy's huge pages (11,240
    # measured), each zero-filling memory in the kernel; reused heap memory: none
    assert plain > 1_000
    assert tuned < plain / 20
