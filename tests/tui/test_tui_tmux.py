"""Keys typed in a real terminal (tmux) right after the UI's first frame are applied, and
quitting leaves one line saying what was saved: the real `localq train` process, its keys
sent by `tmux send-keys` the moment the status line shows "round 0"."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest
from reliability.helpers import REPO, TEST_CLI, run_cli

from conftest import ColorEncoder, write_image
from localq.collection.collection import Collection

# Under CI=true a missing tmux is a failure (.ci/run installs it), never a silent skip.
from localq.loop.trainer import Trainer
from localq.loop.trainer_types import Settings

# Under CI=true a missing tmux is a failure (.ci/run installs it), never a silent skip.
pytestmark = [
    pytest.mark.skipif(
        shutil.which("tmux") is None and os.environ.get("CI") != "true", reason="tmux is not installed (Debian: tmux)"
    ),
    pytest.mark.slow,
]  # the real UI in a real terminal


class Tmux:
    """One detached tmux session on a private server socket, torn down afterwards."""

    def __init__(self, name: str):
        self.socket = f"localq-test-{os.getpid()}-{name}"

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, timeout=30)
        if check:
            assert done.returncode == 0, done.stderr
        return done.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-J", "-t", "ui", check=False)  # -J: a wrapped line as one

    def wait_for(self, text: str, timeout: float = 60.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            shown = self.screen()
            if text in shown:
                return shown
            time.sleep(0.05)
        raise AssertionError(f"{text!r} never appeared; the screen:\n{self.screen()}")

    def close(self) -> None:
        self("kill-server", check=False)


@pytest.fixture
def tmux():
    session = Tmux("keys")
    yield session
    session.close()


def test_keys_sent_right_after_the_first_frame_are_applied(tmp_path, tmux):
    photos = tmp_path / "photos"
    for i in range(8):
        write_image(photos / "red" / f"r{i}.png", (200 + i, 20, 20))
        write_image(photos / "blue" / f"b{i}.png", (20, 20, 200 + i))
    root = tmp_path / "c"
    assert run_cli("index", photos, "--db", root).returncode == 0
    with Collection.open(root) as coll:
        coll.bind_encoder(ColorEncoder())
        Trainer.create(coll, "reds", prompt="red", settings=Settings(k=6))
    command = (
        f"{sys.executable} {TEST_CLI} train --classifier reds --db {root} --thumbnails halfblock; "
        "echo EXIT=$?; sleep 60"
    )
    tmux(
        "new-session",
        "-d",
        "-s",
        "ui",
        "-x",
        "120",
        "-y",
        "40",
        "-e",
        f"PYTHONPATH={REPO}",
        "-e",
        "LOCALQ_TEST_SLOW_FIRST_BATCH=1.5",
        "-e",
        "TERM=xterm-256color",
        "sh",
        "-c",
        command,
    )
    tmux.wait_for("round 0")  # the first frame with the classifier: the batch is still being searched
    tmux("send-keys", "-t", "ui", "3", "j", "1", "j", "3")
    first = tmux.screen()
    tmux.wait_for("model ")  # the cards are up
    assert "model " not in first, "the keys must reach the UI before its grid is ready"
    time.sleep(0.5)
    tmux("send-keys", "-t", "ui", "q")
    shown = tmux.wait_for("EXIT=")
    assert "EXIT=0" in shown
    assert "saved 3 new labels; reds is at round 1 (+2/−1 labels)" in shown
    assert f"resume with `localq train --classifier reds --db {root}`" in shown
    with Collection.open(root) as coll:
        assert sorted(Trainer.open(coll, "reds").labels().values()) == [-1.0, 1.0, 1.0]
