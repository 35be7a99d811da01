"""One writer per run folder, with real processes: a second training is refused, a killed
holder's lock is taken over, and `pretrained.trained` (what `pretrained.get` uses) waits instead
of training twice (issue 14, 1).
"""

import json
import os
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import filelock
import pytest

from tinylm import lock, pretrained, run_files
from tinylm import train as train_mod
from tinylm.lock import FolderLocked, folder_lock
from tinylm.runs import TrainConfig

# A run of a few seconds, so that a second process starts while the first still trains.
SLOW = TrainConfig(
    "char-ci",
    model="char-ci",
    tokenizer="char",
    batch_size=4,
    max_steps=400,
    warmup_steps=2,
    lr=3e-3,
    min_lr=3e-4,
    dropout=0.0,
    eval_interval=100,
    eval_batches=1,
    log_interval=20,
    block_size=32,
    dtype="float32",
)


def trainer_script(cfg: TrainConfig) -> str:
    """Code that trains cfg with pretrained.trained (as notebooks do), single-threaded."""
    return (
        f"import torch\nfrom tinylm import pretrained\n"
        f"from tinylm.runs import TrainConfig\ntorch.set_num_threads(1)\n"
        f"pretrained.trained({cfg!r}, progress=False)\n"
    )


@pytest.fixture
def slow_run(workspace) -> TrainConfig:
    """SLOW, in the synthetic workspace (child processes inherit its folders)."""
    return SLOW


def start(code: str) -> subprocess.Popen:
    """A Python child process running code, with this process's environment."""
    return subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m tinylm ARGS` in a child process; its exit code and output."""
    return subprocess.run(
        [sys.executable, "-m", "tinylm", *args], capture_output=True, text=True, timeout=300
    )


# A script (so that its command line names it) that holds the folder argv[1] for 10 minutes.
HOLD_LOCK = (
    "import sys, time\nfrom tinylm.lock import folder_lock\n"
    "with folder_lock(sys.argv[1]):\n    time.sleep(600)\n"
)


def wait_for_lock(folder: Path, process: subprocess.Popen, timeout_s: float = 120) -> None:
    """Return once `process` holds the folder's lock (fail if it ends first)."""
    deadline = time.monotonic() + timeout_s
    while lock.holder(folder).get("pid") != process.pid:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the child never took the lock"
        time.sleep(0.05)


def logged_steps(cfg: TrainConfig) -> list[int]:
    lines = (cfg.out_dir / run_files.LOG_FILE).read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["step"] for line in lines]


def test_the_lock_is_taken_released_and_nests(tmp_path):
    folder = tmp_path / "run"
    with folder_lock(folder):
        assert lock.holder(folder)["pid"] == os.getpid()
        with folder_lock(folder):  # the same process again: no deadlock
            pass
        assert (folder / lock.LOCK_FILE).is_file() and (folder / lock.HOLDER_FILE).is_file()
    assert not (folder / lock.HOLDER_FILE).exists() and lock.holder(folder) == {}
    with folder_lock(folder):  # released: taken again (the empty lock file stays on Linux)
        pass


@pytest.mark.slow
def test_the_message_names_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path):
    folder, script = tmp_path / "run", tmp_path / "hold_lock.py"
    script.write_text(HOLD_LOCK, encoding="utf-8")
    other = subprocess.Popen([sys.executable, str(script), str(folder)])
    try:
        wait_for_lock(folder, other)
        with pytest.raises(FolderLocked) as refused, folder_lock(folder):
            pass
        message = str(refused.value)
        assert f"in use by process {other.pid} on " in message
        assert f"{script} {folder}" in message and f"(kill {other.pid})" in message
    finally:
        other.kill()  # no clean-up: its lock.json stays behind
        other.wait()
    assert lock.holder(folder)["pid"] == other.pid
    with folder_lock(folder):  # the operating system released the dead one's lock
        assert lock.holder(folder)["pid"] == os.getpid()


def test_the_windows_path_as_far_as_linux_goes(tmp_path, monkeypatch):
    assert not {"fcntl", "msvcrt"} & set(vars(lock))  # filelock picks the OS's lock
    real_replace = os.replace
    refusals = [PermissionError(13, "in use by another process")] * 2

    def replace_as_windows(src, dst):  # Windows refuses while another process reads dst
        if refusals:
            raise refusals.pop()
        real_replace(src, dst)

    monkeypatch.setattr(lock.os, "replace", replace_as_windows)
    folder = tmp_path / "run"
    with folder_lock(folder):
        assert not refusals and lock.holder(folder)["pid"] == os.getpid()
        with monkeypatch.context() as windows:
            windows.setattr(lock.sys, "platform", "win32")
            assert f"(taskkill /PID {os.getpid()})" in lock._locked_message(folder)
    monkeypatch.setattr(lock, "FileLock", filelock.WindowsFileLock)  # it accepts our options
    with pytest.raises(NotImplementedError), folder_lock(folder):  # LockFileEx: Windows only
        pass


@pytest.mark.slow
def test_a_second_training_is_refused_and_a_killed_ones_lock_taken_over(slow_run):
    endless = replace(slow_run, max_steps=10**6, eval_interval=10**6)
    first = start(trainer_script(endless))
    try:
        wait_for_lock(slow_run.out_dir, first)
        for extra in ([], ["--no-resume"]):  # --no-resume used to delete the first one's files
            second = cli("train", "--run", "char-ci", *extra)
            assert second.returncode == 1, second.stderr
            assert f"in use by process {first.pid}" in second.stderr, second.stderr
            assert "Traceback" not in second.stderr
        assert first.poll() is None  # still training, undisturbed
    finally:
        first.kill()  # SIGKILL (TerminateProcess on Windows): no clean-up, lock.json stays
        first.wait()
    steps = logged_steps(slow_run)
    assert steps == sorted(set(steps))  # each record once: nobody else wrote into the log
    assert lock.holder(slow_run.out_dir)["pid"] == first.pid  # the dead process's lock file
    third = cli("train", "--run", "char-ci", "max_steps=3", "warmup_steps=1", "--no-resume")
    assert third.returncode == 0, third.stderr
    assert logged_steps(slow_run) == [0, 3]


@pytest.mark.slow
def test_trained_waits_for_another_process_then_loads(slow_run, monkeypatch):
    first = start(trainer_script(slow_run))
    finished_when_called = []

    def train_spy(cfg, **kwargs):
        finished_when_called.append(run_files.is_finished(cfg))
        return train_mod.train(cfg, **kwargs)

    monkeypatch.setattr(pretrained, "train", train_spy)
    try:
        wait_for_lock(slow_run.out_dir, first)
        assert first.poll() is None  # still training
        result = pretrained.trained(slow_run, progress=False)  # waits, then loads
        assert first.wait(timeout=300) == 0
    finally:
        first.kill()
    assert finished_when_called == [True]  # it waited for the other process's final model
    assert result.model.config.block_size == 32
    steps = logged_steps(slow_run)
    assert steps == sorted(set(steps)) and steps[-1] == slow_run.max_steps


def test_a_locked_folder_refuses_in_process_callers_too(slow_run):
    holder = start(
        f"import time\nfrom tinylm.lock import folder_lock\n"
        f"with folder_lock({str(slow_run.out_dir)!r}):\n"
        f"    time.sleep(600)\n"
    )
    try:
        wait_for_lock(slow_run.out_dir, holder)
        with pytest.raises(FolderLocked, match=f"process {holder.pid} .*run_name"):
            train_mod.train(slow_run, progress=False)
    finally:
        holder.kill()
        holder.wait()
