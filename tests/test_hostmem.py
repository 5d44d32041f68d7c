"""distill.hostmem: freed large tensors stay in the process, so a training step does not page-fault them in again."""

import json
import os
import subprocess
import sys

import pytest

from distill.errors import InputError
from distill.hostmem import choice, keep_freed_memory

# A 64 MB tensor allocated, written and freed 20 times: the median page faults of the last 8 rounds. With
# `keep` the first ~8 rounds still grow the heap (glibc does not at once reuse the freed block for the next one).
PROBE = """
import json, resource, sys, torch
from distill.hostmem import keep_freed_memory
kept = keep_freed_memory()
faults = []
for _ in range(20):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    t = torch.empty(16 * 2**20)
    t.fill_(1.0)
    del t
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": kept, "faults": sorted(faults[12:])[4]}))
"""


def probe(setting: str) -> dict:
    env = {**os.environ, "DISTILL_HOST_MALLOC": setting}
    done = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_keep_stops_a_freed_64mb_tensor_from_faulting_in_again():
    keep, system = probe("keep"), probe("system")
    assert keep["kept"] is True and system["kept"] is False
    # 64 MB of 4 KiB pages is ~16,000 faults each time glibc unmaps and maps it again
    assert keep["faults"] * 10 <= system["faults"], (keep, system)


def test_system_setting_is_read_ignoring_case_and_spaces_and_turns_the_change_off(monkeypatch):
    monkeypatch.setenv("DISTILL_HOST_MALLOC", " System ")
    assert choice() == "system"
    assert keep_freed_memory() is False


def test_a_bad_host_malloc_value_is_an_input_error_naming_the_variable(monkeypatch):
    monkeypatch.setenv("DISTILL_HOST_MALLOC", "tcmalloc")
    with pytest.raises(InputError, match=r"DISTILL_HOST_MALLOC='tcmalloc': must be one of keep, system"):
        keep_freed_memory()
