"""The allocator thresholds the daemon sets at start (ytproxy.malloc)."""

from __future__ import annotations

import platform
import subprocess
import sys


def test_thresholds_are_taken_where_the_c_library_is_glibc() -> None:
    # In a child process: the thresholds stay set for the life of a process.
    code = "from ytproxy.malloc import tune_malloc; print(tune_malloc())"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=60).stdout.strip()
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out == str(glibc)

