"""Test-only entry point: the real `localq` CLI with the tests' tiny ColorEncoder.

Subprocess tests run ``python tests/reliability/localq_test_cli.py ARGS`` so that real
processes race on a real collection without loading a neural network. Nothing in the
package refers to this file."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for conftest.ColorEncoder

import localq.encoders  # noqa: E402
from conftest import ColorEncoder  # noqa: E402

localq.encoders.load_encoder = lambda spec="lite0", weights=None: ColorEncoder()

from localq.cli import main  # noqa: E402

if os.environ.get("LOCALQ_TEST_SLOW_FIRST_BATCH"):
    # The first batch of a big collection on a busy machine: a window in which keys typed
    # right after the UI appears must still count (tests/tui/test_tui_tmux.py).
    import time

    from localq.tui import bridge

    _first_batch = bridge.first_batch

    def _slow_first_batch(*args, **kwargs):
        time.sleep(float(os.environ["LOCALQ_TEST_SLOW_FIRST_BATCH"]))
        return _first_batch(*args, **kwargs)

    bridge.first_batch = _slow_first_batch

if __name__ == "__main__":
    sys.argv[0] = "localq"
    main()
