"""Seeded, time-bounded fuzzing of the checkpoint reader (issue 13).

A child process (tests/_checkpoint_fuzz.py) loads a few thousand mutated small checkpoints
under an address-space limit: bytes flipped in whole files, pickles mutated opcode-aware and
re-zipped with valid CRCs (zip and legacy format), random opcode streams, rewritten zip header
fields; some with malicious globals that would create a marker file if they ever ran, some
with allow_unknown_globals=True. Every case must load or raise the reader's own error naming
the file: no other exception, no crash, no case over 10 s, no MemoryError under the limit.
A failure names the case number; `python tests/_checkpoint_fuzz.py --first N --cases 1 ...`
reproduces it.
"""

import json

import _checkpoint_fuzz as fuzz
import pytest

from keras_vswin import checkpoint_reader as cr

SEED = 13
CASES = 4000
SECONDS = 45.0  # the time budget; on a loaded 2-core machine fewer cases run
MIN_CASES = 1000
CAP_MIB = 1024  # address space the child may add after its imports


def test_fuzzed_checkpoints_load_or_raise_the_readers_error(tmp_path):
    seeds, work = tmp_path / "seeds", tmp_path / "work"
    work.mkdir()
    fuzz.write_seed_files(seeds, fuzz.torch_seed_files())
    marker = tmp_path / "code-ran"
    report = fuzz.run_fuzz(cr.__file__, seeds, work, marker, SEED, CASES, SECONDS, CAP_MIB)
    print(json.dumps({k: report.get(k) for k in ("cases", "seconds", "counts", "peak_mib")}))
    assert "crashed" not in report, report  # e.g. a C stack overflow (SIGSEGV)
    assert report["failure_count"] == 0, json.dumps(report["failures"][:10], indent=1)
    assert not marker.exists(), "a global named by a fuzzed file was called"
    assert report["cases"] >= MIN_CASES, report
    counts = report["counts"]
    # the mutations reach every outcome: loads, format errors and refused globals
    assert counts.get("loaded", 0) > 0 and counts.get("CheckpointFormatError", 0) > 0, counts
    assert counts.get("UnsafeCheckpointError", 0) > 0, counts
    assert report["peak_mib"] < 256, report


@pytest.mark.parametrize("strategy", fuzz.STRATEGIES)
def test_fuzz_cases_are_reproducible(tmp_path, strategy):
    """The case generator is a pure function of (seed, case number)."""
    fuzz.write_seed_files(tmp_path)
    files = [p.read_bytes() for p in sorted(tmp_path.iterdir())]
    seeds = fuzz.seed_checkpoints()
    case = fuzz.STRATEGIES.index(strategy) + 5 * 7
    first = fuzz.make_case(case, SEED, files, seeds, tmp_path / "m")
    assert first == fuzz.make_case(case, SEED, files, seeds, tmp_path / "m")
    assert first[0] == strategy
