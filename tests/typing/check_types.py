"""Check the public API's annotations with mypy --strict.

pass_usage.py must pass; fail_usage.py must give errors on exactly the lines
marked ``# E`` (one or more each), and on no other line. Run it with the
Python of an environment where nnkernels and mypy are installed (or where
nnkernels is importable through PYTHONPATH), from any folder:

    python tests/typing/check_types.py

Exit status 0 when both hold.
"""

import re
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def mypy(path, cache_dir):
    cmd = [sys.executable, "-m", "mypy", "--strict", "--no-error-summary",
           "--hide-error-context", "--no-pretty", "--cache-dir", cache_dir, path.name]
    # from this folder, so that the path names in the report are short
    done = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True)
    return done.returncode, done.stdout + done.stderr


def main():
    failures = []
    with tempfile.TemporaryDirectory() as cache_dir:
        rc, report = mypy(HERE / "pass_usage.py", cache_dir)
        if rc != 0:
            failures.append(f"mypy --strict pass_usage.py failed (exit {rc}):\n{report}")
        else:
            print("pass_usage.py: mypy --strict found no issues")

        fail = HERE / "fail_usage.py"
        expected = {number for number, line in enumerate(fail.read_text().splitlines(), 1)
                    if re.match(r"\w.*\S\s+#\s+E(\s|$)", line)}   # a code line's comment
        rc, report = mypy(fail, cache_dir)
        reported = {int(m.group(1)) for m in re.finditer(
            r"^fail_usage\.py:(\d+): error:", report, re.MULTILINE)}
        if rc == 0 or not expected:
            failures.append(f"mypy found no error in fail_usage.py (exit {rc}):\n{report}")
        missed, extra = sorted(expected - reported), sorted(reported - expected)
        if missed:
            failures.append(f"fail_usage.py: no error on the lines marked # E: {missed}")
        if extra:
            failures.append(f"fail_usage.py: errors on unmarked lines: {extra}")
        print(report.rstrip())
        if not (missed or extra):
            print(f"fail_usage.py: mypy --strict reported errors on exactly the "
                  f"{len(expected)} lines marked # E")

    for failure in failures:
        print("FAIL:", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
