"""Runs archives: trained runs exported on one machine and imported on another, checked whole.

Most runs here are written with the real save functions (no training, so each test takes well
under a second); the round trip trains a tiny run for a few steps on the synthetic poems.
"""

import io
import json
import os
import tarfile
from dataclasses import asdict, replace
from pathlib import Path

import pytest
import torch
from synthetic import folder_state

from tinylm import archive, cli, pretrained, runs
from tinylm import train as train_mod
from tinylm.archive import ArchiveError, export_runs, import_runs
from tinylm.model import GPT, GPTConfig
from tinylm.run_files import (
    LOG_FILE,
    is_finished,
    load_checkpoint,
    save_checkpoint,
    save_model,
    write_log,
)
from tinylm.runs import TrainConfig
from tinylm.tokenizers import CharTokenizer

TINY_MODEL = GPTConfig(vocab_size=16, block_size=8, n_layer=1, n_head=1, n_embd=8)
# dtype float32, not "auto": the same numbers on every CPU (as tests/test_train.py's TINY)
TINY_RUN = TrainConfig(
    "tiny",
    model="char-ci",
    batch_size=4,
    max_steps=4,
    warmup_steps=1,
    dropout=0.0,
    eval_interval=2,
    eval_batches=1,
    log_interval=1,
    block_size=32,
    dtype="float32",
)


def use_runs_dir(monkeypatch, folder: Path) -> Path:
    """Point TINYLM_RUNS_DIR at folder (the machine the test is on now)."""
    monkeypatch.setenv(runs.RUNS_DIR_ENV, str(folder))
    return folder


def make_config(name: str, **changes) -> TrainConfig:
    """The config of a run make_run writes."""
    return replace(TrainConfig(name, max_steps=2, warmup_steps=1, dropout=0.0), **changes)


def make_run(name: str, **changes) -> TrainConfig:
    """A finished run folder, written as training writes it: log, checkpoints, model, lock."""
    cfg = make_config(name, **changes)
    torch.manual_seed(0)
    model = GPT(TINY_MODEL)
    optimizer = torch.optim.AdamW(model.parameters())
    _, loss = model(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4, dtype=torch.long))
    loss.backward()
    optimizer.step()
    out = cfg.out_dir
    for step in (1, 2):  # the first becomes checkpoint.old
        state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "rng": [],
            "train_config": asdict(cfg),
            "elapsed_s": 1.0,
        }
        save_checkpoint(out, model, state)
    save_model(out, model, CharTokenizer("春江花月"), cfg)
    write_log(out, [{"step": 0, "val_loss": 2.8}, {"step": 2, "val_loss": 2.5}])
    (out / "lock").touch()
    (out / "lock.json").write_text("{}")
    return cfg


def course_fields(name: str, **changes) -> dict:
    """The course's config of run `name` as make_run's changes, with these changes on top."""
    return {**asdict(runs.RUNS[name]), **changes}


@pytest.fixture
def machines(tmp_path, monkeypatch) -> tuple[Path, Path]:
    """Two runs folders: the trained machine's (TINYLM_RUNS_DIR now) and an empty laptop's."""
    return use_runs_dir(monkeypatch, tmp_path / "trainer"), tmp_path / "laptop"


def member_names(path: Path) -> list[str]:
    with tarfile.open(path) as tar:
        return tar.getnames()


def nothing_left(folder: Path) -> bool:
    """True if folder holds no run and no temporary folder (missing counts as empty)."""
    return not folder.exists() or not any(folder.iterdir())


def rewrite(source: Path, target: Path, change) -> None:
    """Copy the archive member by member, change(info, data) deciding each (None: left out)."""
    with tarfile.open(source) as tar, tarfile.open(target, "w") as out:
        for info in tar:
            kept = change(info, tar.extractfile(info).read())
            if kept is not None:
                info, data = kept
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))


def test_round_trip_gives_a_finished_run_with_the_same_logits(workspace, one_thread, monkeypatch):
    trained = train_mod.train(TINY_RUN, progress=False)
    archive_file = workspace / "runs.tar"
    manifest = export_runs(archive_file, ["tiny"])
    assert member_names(archive_file) == [
        "MANIFEST.json",
        "runs/tiny/log.jsonl",
        *(f"runs/tiny/model/{name}" for name in archive.MODEL_FILES),
    ]
    laptop = use_runs_dir(monkeypatch, workspace / "laptop")
    result = import_runs(archive_file)
    assert result.installed == ("tiny",) and result.runs_dir == laptop
    assert manifest.runs[0].train_config == json.loads(json.dumps(asdict(TINY_RUN)))
    assert is_finished(TINY_RUN) and TINY_RUN.out_dir == laptop / "tiny"

    def retrained(*args, **kwargs):
        raise AssertionError("an imported run was trained again")

    monkeypatch.setattr(train_mod, "_train", retrained)
    loaded = train_mod.train(TINY_RUN, progress=False)  # what warm and the notebooks call
    assert loaded.history == trained.history
    model = GPT.from_pretrained(laptop / "tiny" / "model").eval()
    idx = torch.arange(16).view(2, 8) % model.config.vocab_size
    with torch.no_grad():
        assert torch.equal(model(idx)[0], trained.model.eval()(idx)[0])


def test_optimizer_state_is_packed_only_when_asked(machines, monkeypatch):
    trainer, laptop = machines
    cfg = make_run("a")
    export_runs(trainer / "models.tar", ["a"])
    export_runs(trainer / "full.tar", ["a"], with_optimizer=True)
    assert not any("checkpoint" in name for name in member_names(trainer / "models.tar"))
    assert {
        "runs/a/checkpoint/config.json",
        "runs/a/checkpoint/model.safetensors",
        "runs/a/checkpoint/trainer_state.pt",
    } <= set(member_names(trainer / "full.tar"))
    use_runs_dir(monkeypatch, laptop)
    import_runs(trainer / "full.tar")
    folder, state, _ = load_checkpoint(laptop / "a", cfg)  # resumable: the optimizer came along
    assert folder == laptop / "a" / "checkpoint" and state["step"] == 2 and state["optimizer"]
    assert {p.name for p in (laptop / "a").iterdir()} == {"checkpoint", "log.jsonl", "model"}


def test_locks_old_checkpoints_and_temporary_files_are_never_packed(machines):
    trainer, _ = machines
    make_run("a")
    for name in ("model.tmp", "checkpoint.tmp"):
        (trainer / "a" / name).mkdir()
        (trainer / "a" / name / "config.json").write_text("{}")
    (trainer / "a" / "log.jsonl.part").write_text("")
    export_runs(trainer / "full.tar", ["a"], with_optimizer=True)
    names = member_names(trainer / "full.tar")
    assert len(names) == 1 + 1 + 4 + 3  # manifest, log, model/, checkpoint/
    assert not any(word in name for name in names for word in ("lock", ".old", ".tmp", ".part"))


def test_export_refuses_runs_that_are_not_finished_and_names_them(machines):
    trainer, _ = machines
    make_run("done")
    cfg = make_run("half")
    (cfg.out_dir / "model" / "train_config.json").unlink()  # as before the last save
    with pytest.raises(ArchiveError, match=r"not finished .*: half \(not trained\), gone \(not"):
        export_runs(trainer / "runs.tar", ["done", "half", "gone"])
    assert not (trainer / "runs.tar").exists()


def test_export_refuses_a_run_trained_otherwise_than_the_course_defines(machines):
    trainer, _ = machines
    make_run("char-ci", **course_fields("char-ci", lr=0.5))
    with pytest.raises(ArchiveError, match=r"char-ci \(trained with another config.*lr 0.5 → "):
        export_runs(trainer / "runs.tar", ["char-ci"])


def test_a_profiles_runs_are_what_warm_trains(machines, capsys):
    trainer, _ = machines
    names = archive.profile_run_names("ci")
    assert names == [cfg.run_name for cfg in pretrained.profile_runs("ci")]
    assert "char-ci" in names and "sweep-xs-5" in names
    assert archive.untrained_runs(names) == names  # nothing trained in an empty runs folder
    path = trainer.parent / "ci.tar"
    assert cli.main(["runs", "export", str(path), "--profile", "ci"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "char-ci (not trained)" in err and "sweep-xs-5" in err
    assert not path.exists()


def flip_byte(path: Path, member: str) -> None:
    """Change one byte in the middle of a member's data, as a bad copy would."""
    with tarfile.open(path) as tar:
        info = tar.getmember(member)
    with open(path, "r+b") as f:
        f.seek(info.offset_data + info.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))


def test_a_damaged_archive_is_refused_naming_the_file_and_installs_nothing(machines, monkeypatch):
    trainer, laptop = machines
    make_run("a")
    make_run("b")
    export_runs(trainer / "runs.tar", ["a", "b"])
    flip_byte(trainer / "runs.tar", "runs/b/model/model.safetensors")
    use_runs_dir(monkeypatch, laptop)
    with pytest.raises(ArchiveError, match=r"damaged: runs/b/model/model.safetensors does not"):
        import_runs(trainer / "runs.tar")
    assert nothing_left(laptop)  # not even run a, whose files were whole


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"", "is not a tar archive"),
        (bytes(range(256)) * 40, "is not a tar archive"),
        ("tar", "a tar archive but not a runs archive: it does not start with MANIFEST.json"),
        ("version", "format version 2, which this tinylm"),
        ("format", "but not a runs archive's"),
        ("cut", "cut short or damaged"),
    ],
)
def test_a_foreign_file_is_refused_saying_what_it_is_not(machines, monkeypatch, content, says):
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])
    path = trainer / "other"
    if content == "tar":
        with tarfile.open(path, "w") as tar:
            tar.add(trainer / "a" / "log.jsonl", "log.jsonl")
    elif content in ("version", "format"):
        key, value = ("version", 2) if content == "version" else ("format", "zip-of-runs")

        def other_manifest(info, data):
            if info.name == "MANIFEST.json":
                data = json.dumps({**json.loads(data), key: value}).encode()
            return info, data

        rewrite(trainer / "runs.tar", path, other_manifest)
    elif content == "cut":
        data = (trainer / "runs.tar").read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        path.write_bytes(content)
    use_runs_dir(monkeypatch, laptop)
    with pytest.raises(ArchiveError, match=says):
        import_runs(path)
    assert nothing_left(laptop)


@pytest.mark.parametrize(
    ("name", "kind", "says"),
    [
        ("../../escaped.txt", tarfile.REGTYPE, "a path outside the runs folder"),
        ("runs/a/../../escaped.txt", tarfile.REGTYPE, "a path outside the runs folder"),
        ("/tmp/escaped.txt", tarfile.REGTYPE, "a path outside the runs folder"),
        ("runs/a/notes.txt", tarfile.REGTYPE, "not listed in its MANIFEST.json"),
        ("runs/a/log.jsonl", tarfile.SYMTYPE, "a link, folder or device"),
        ("runs/a/log.jsonl", tarfile.CHRTYPE, "a link, folder or device"),
    ],
)
def test_members_outside_the_manifest_links_and_devices_are_refused(
    machines, monkeypatch, name, kind, says
):
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])

    def add_member(info, data):  # in place of the log
        if info.name != "runs/a/log.jsonl":
            return info, data
        evil = tarfile.TarInfo(name)
        evil.type, evil.linkname = kind, "/etc/passwd" if kind == tarfile.SYMTYPE else ""
        return evil, data if kind == tarfile.REGTYPE else b""

    rewrite(trainer / "runs.tar", trainer / "evil.tar", add_member)
    use_runs_dir(monkeypatch, laptop)
    with pytest.raises(ArchiveError, match=says):
        import_runs(trainer / "evil.tar")
    assert nothing_left(laptop) and not (laptop.parent / "escaped.txt").exists()


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"name": "../escaped"}, "not one plain folder name"),
        ({"files": [{"path": "../../x", "size": 1, "sha256": "0" * 64}]}, "not a run's file"),
    ],
)
def test_a_manifest_naming_paths_outside_a_run_is_refused(machines, monkeypatch, change, says):
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])

    def evil_manifest(info, data):
        if info.name == "MANIFEST.json":
            manifest = json.loads(data)
            manifest["runs"][0] |= change
            data = json.dumps(manifest).encode()
        return info, data

    rewrite(trainer / "runs.tar", trainer / "evil.tar", evil_manifest)
    use_runs_dir(monkeypatch, laptop)
    with pytest.raises(ArchiveError, match=f"MANIFEST.json is damaged .*{says}"):
        import_runs(trainer / "evil.tar")
    assert nothing_left(laptop)


def test_a_run_here_with_another_config_refuses_the_whole_archive(machines, monkeypatch):
    trainer, laptop = machines
    make_run("a")
    make_run("b")
    export_runs(trainer / "runs.tar", ["a", "b"])
    use_runs_dir(monkeypatch, laptop)
    make_run("b", lr=3e-4)
    before = folder_state(laptop)
    with pytest.raises(ArchiveError, match=r"Run b is here already .*lr 0.0003 → 0.001.*left as"):
        import_runs(trainer / "runs.tar")
    assert folder_state(laptop) == before and not (laptop / "a").exists()
    assert [p.name for p in laptop.iterdir()] == ["b"]  # no temporary folder either


def test_a_run_here_with_another_model_shape_is_a_clash_too(machines, monkeypatch):
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])
    use_runs_dir(monkeypatch, laptop)
    make_run("a")
    config = laptop / "a" / "model" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "n_embd": 16}))
    with pytest.raises(ArchiveError, match="model n_embd 16 → 8"):
        import_runs(trainer / "runs.tar")


def test_importing_the_same_runs_again_keeps_them_as_they_are(machines, monkeypatch):
    trainer, laptop = machines
    make_run("a")
    make_run("b")
    export_runs(trainer / "runs.tar", ["a", "b"])
    use_runs_dir(monkeypatch, laptop)
    first = import_runs(trainer / "runs.tar")
    installed = folder_state(laptop)
    again = import_runs(trainer / "runs.tar")
    assert first.installed == ("a", "b") and first.already_present == ()
    assert again.installed == () and again.already_present == ("a", "b")
    assert folder_state(laptop) == installed


def test_a_training_not_finished_here_is_refused_and_a_bare_lock_is_replaced(machines, monkeypatch):
    trainer, laptop = machines
    make_run("a")
    make_run("b")
    export_runs(trainer / "runs.tar", ["a", "b"])
    use_runs_dir(monkeypatch, laptop)
    (laptop / "a").mkdir(parents=True)
    (laptop / "a" / "lock").touch()  # a training refused before it wrote anything
    (laptop / "b").mkdir()
    write_log(laptop / "b", [{"step": 0}])  # a training under way, or cut short
    with pytest.raises(ArchiveError, match=r"b holds a training of run b that has not finished"):
        import_runs(trainer / "runs.tar")
    (laptop / "b" / LOG_FILE).unlink()
    (laptop / "b").rmdir()
    assert import_runs(trainer / "runs.tar").installed == ("a", "b")
    assert not (laptop / "a" / "lock").exists() and is_finished(make_config("a"))


def test_a_run_this_tinylm_defines_otherwise_is_refused(machines, monkeypatch):
    trainer, laptop = machines
    make_run("char-ci", **course_fields("char-ci", lr=0.5))
    monkeypatch.setattr(archive, "course_configs", dict)  # exported by another tinylm
    export_runs(trainer / "runs.tar", ["char-ci"])
    monkeypatch.undo()
    use_runs_dir(monkeypatch, laptop)
    with pytest.raises(ArchiveError, match=r"Run char-ci .* defines for it \(lr 0.5 → 0.003\)"):
        import_runs(trainer / "runs.tar")
    assert nothing_left(laptop)


def test_a_read_only_runs_folder_names_the_variable_and_leaves_nothing(machines, monkeypatch):
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders; see the simulated test below")
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])
    use_runs_dir(monkeypatch, laptop)
    laptop.mkdir()
    laptop.chmod(0o555)
    try:
        with pytest.raises(ArchiveError, match=f"make it writable, or set {runs.RUNS_DIR_ENV}"):
            import_runs(trainer / "runs.tar")
        assert nothing_left(laptop)
    finally:
        laptop.chmod(0o755)


def test_a_runs_folder_refusing_writes_names_the_variable_even_for_root(
    machines, monkeypatch, capsys
):
    trainer, laptop = machines
    make_run("a")
    export_runs(trainer / "runs.tar", ["a"])
    use_runs_dir(monkeypatch, laptop)
    laptop.mkdir()
    real_mkdir = os.mkdir

    def read_only(path, *args, **kwargs):  # as a folder with mode 0o555 is for anyone but root
        if Path(path).parent == laptop:
            raise PermissionError(13, "Permission denied", str(path))
        return real_mkdir(path, *args, **kwargs)

    monkeypatch.setattr(os, "mkdir", read_only)
    assert cli.main(["runs", "import", str(trainer / "runs.tar")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write into the runs folder {laptop} (Permission denied)")
    assert f"set {runs.RUNS_DIR_ENV} to a folder you can write to" in err
    assert err.count("\n") == 1 and nothing_left(laptop)


def test_cli_exports_and_imports_with_a_summary(machines, monkeypatch, capsys):
    trainer, laptop = machines
    make_run("a")
    make_run("b")
    path = trainer / "runs.tar"
    assert cli.main(["runs", "export", str(path), "--runs", "a", "b"]) == 0
    out = capsys.readouterr().out
    assert f"exported 2 runs to {path}: " in out and "no optimizer state" in out
    assert out.count(" MB") == 3 and "python -m tinylm runs import runs.tar" in out
    use_runs_dir(monkeypatch, laptop)
    assert cli.main(["runs", "import", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"imported {path} (2 runs, exported by tinylm " in out and f"into {laptop}" in out
    assert out.count("  installed") == 2 and "the ci profile here still lacks" in out
    assert cli.main(["runs", "import", str(path)]) == 0
    assert capsys.readouterr().out.count("already here, same config: kept") == 2
    assert cli.main(["runs", "import", str(trainer / "none.tar")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: there is no file") and "Traceback" not in err


def test_a_killed_export_leaves_the_old_file_and_no_partial_one(machines, monkeypatch):
    trainer, _ = machines
    make_run("a")
    path = trainer / "runs.tar"
    path.write_bytes(b"the archive of yesterday")
    real_addfile = tarfile.TarFile.addfile

    def killed_after_the_manifest(tar, info, fileobj=None):
        if info.name != "MANIFEST.json":
            raise KeyboardInterrupt
        return real_addfile(tar, info, fileobj)

    monkeypatch.setattr(tarfile.TarFile, "addfile", killed_after_the_manifest)
    with pytest.raises(KeyboardInterrupt):
        export_runs(path, ["a"])
    assert path.read_bytes() == b"the archive of yesterday"
    assert {p.name for p in trainer.iterdir()} == {"a", "runs.tar"}  # no runs.tar.part
