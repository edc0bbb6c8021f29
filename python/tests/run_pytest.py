"""Runs one python/tests/test_*.py file with pytest for CTest (python/CMakeLists.txt).

Exit codes: pytest's own (0 passed, 1 failed, ...), or 77, which CTest reports as skipped, when
pytest or the aesthete module cannot be imported or when every test in the file skipped; the
reason is printed, so a skipped check is never reported as passed.
"""
import sys

SKIP = 77


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: run_pytest.py TEST_FILE", file=sys.stderr)
        return 2
    try:
        import pytest
    except ImportError as e:
        print(f"skipped: pytest is not installed for {sys.executable} ({e}; Debian: python3-pytest)")
        return SKIP
    try:
        import aesthete  # noqa: F401
    except ImportError as e:
        print(f"skipped: the aesthete module cannot be imported by {sys.executable}: {e} "
              "(build it with `make python`; PYTHONPATH must hold build/python)")
        return SKIP

    class Outcomes:
        def __init__(self):
            self.passed = self.skipped = self.failed = 0

        def pytest_runtest_logreport(self, report):
            if report.when == "call" and report.passed:
                self.passed += 1
            elif report.skipped:
                self.skipped += 1
            elif report.failed:
                self.failed += 1

    outcomes = Outcomes()
    rc = pytest.main(["-q", "-rs", "-p", "no:cacheprovider", sys.argv[1]], plugins=[outcomes])
    if rc == 0 and outcomes.passed == 0 and outcomes.skipped > 0:
        print(f"skipped: all {outcomes.skipped} tests of {sys.argv[1]} skipped (reasons above)")
        return SKIP
    return int(rc)


if __name__ == "__main__":
    sys.exit(main())
