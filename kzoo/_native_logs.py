"""Keep TensorFlow's and absl's C++ log lines out of the ``kzoo`` command's output.

TensorFlow 2.21 logs through absl before anything reads ``TF_CPP_MIN_LOG_LEVEL`` (``I0000 ... port.cc:153]
oneDNN custom operations are on``, ``E0000 ... cuInit`` on a machine without a GPU, and absl's
``WARNING: All log messages before absl::InitializeLog() ...`` preamble). No setting silences all of them,
so the command line routes file descriptor 2 through a filter that drops lines in absl's format and
passes everything else, kzoo's messages and Python tracebacks included, unchanged.
``KZOO_VERBOSE=1`` (or ``TF_CPP_MIN_LOG_LEVEL`` set by the user) keeps the native lines.
"""

from __future__ import annotations

import atexit
import os
import re
import sys
import threading

# absl/glog: severity letter, MMDD, time (TF prints epoch seconds where seconds go), thread id, file:line]  -- and absl's one-line preamble.
NATIVE_LINE = re.compile(rb"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [^\s\]]+:\d+\] |"
                         rb"WARNING: All log messages before absl::InitializeLog\(\) is called)")


# The unprefixed second lines of TensorFlow's multi-line native messages (cpu_feature_guard). Only these
# known ones are dropped: any other line after a native one may be a program's own (kzoo bench's progress).
CONTINUATIONS = (b"To enable the following instructions:",)


def is_native_log(line: bytes) -> bool:
    return NATIVE_LINE.match(line) is not None


def filter_stderr() -> None:
    """Route fd 2 through a thread that drops native log lines; undone at interpreter exit."""
    if os.environ.get("KZOO_VERBOSE") or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"  # what TensorFlow does honour, it then honours
    sys.stderr.flush()
    real_stderr = os.dup(2)
    read_end, write_end = os.pipe()
    os.dup2(write_end, 2)
    os.close(write_end)

    def pump():
        with os.fdopen(read_end, "rb", buffering=0) as pipe:
            pending, after_native = b"", False
            while chunk := pipe.read(65536):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                kept = []
                for line in lines:
                    native = is_native_log(line) or (after_native and line.startswith(CONTINUATIONS))
                    after_native = native
                    if not native:
                        kept.append(line + b"\n")
                if kept:
                    os.write(real_stderr, b"".join(kept))
            if pending and not is_native_log(pending):
                os.write(real_stderr, pending)

    thread = threading.Thread(target=pump, name="kzoo-stderr-filter", daemon=True)
    thread.start()

    def restore():
        try:
            sys.stderr.flush()
        except (OSError, ValueError):
            pass
        os.dup2(real_stderr, 2)  # closes the pipe's last write end: the pump sees EOF and drains
        thread.join(timeout=2.0)

    atexit.register(restore)
