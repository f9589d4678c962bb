"""A quiet console: a command shows its own lines, not the frameworks' start-up logging.

TensorFlow and XLA log through absl before absl is initialized, straight to file
descriptor 2 (so neither Python's `logging` nor `TF_CPP_MIN_LOG_LEVEL` reaches them):
`WARNING: All log messages before absl::InitializeLog() ...`, `I0000 ... oneDNN custom
operations are on`, the CPU-instruction notice and, on every machine without a GPU,
`E0000 ... failed call to cuInit`, which reads as a failure. `quiet_startup` captures
descriptor 2 while the frameworks import and look for devices, then replays every line
that is not such start-up noise, so a real error still shows. `--verbose` (or a
`TF_CPP_MIN_LOG_LEVEL` the user sets, which stays respected) shows everything.
"""

import contextlib
import os
import re
import sys
import tempfile

# Start-up lines the frameworks print on every machine; nothing a user can act on.
STARTUP_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\)"
    r"|[IW]\d{4} "                                   # absl INFO / WARNING lines
    r"|E\d{4} .*(cuInit|cuda_|CUDA)"                 # the CUDA probe on a CPU-only machine
    r"|To enable the following instructions"         # the CPU-feature notice's second line
)


# Set beside TF_CPP_MIN_LOG_LEVEL when this module chose its value, so that child
# processes (a sweep's runs) inherit the quiet default and not a "user's choice".
OWN_LEVEL = "BNLAB_QUIET_TF_LOG_LEVEL"


def verbose_requested(flag):
    """True if the user wants the frameworks' own logging: `--verbose`, or their own
    `TF_CPP_MIN_LOG_LEVEL`."""
    return bool(flag) or ("TF_CPP_MIN_LOG_LEVEL" in os.environ and OWN_LEVEL not in os.environ)


@contextlib.contextmanager
def quiet_startup(verbose=False):
    """Hold back the frameworks' start-up noise printed inside this block (see the
    module docstring); lines that are not noise are printed when the block ends."""
    if verbose:
        yield
        return
    # TensorFlow's own C++ INFO and WARNING lines after start-up, as TF documents.
    if "TF_CPP_MIN_LOG_LEVEL" not in os.environ:
        os.environ.update({"TF_CPP_MIN_LOG_LEVEL": "2", OWN_LEVEL: "1"})
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines():
                if line.strip() and not STARTUP_NOISE.match(line):
                    print(line, file=sys.stderr)
