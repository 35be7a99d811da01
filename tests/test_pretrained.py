"""pretrained: get trains the profile's run once and loads it afterwards; warm trains them all."""

from dataclasses import replace

import pytest
import torch
from synthetic import folder_state

from tinylm import pretrained, runs
from tinylm.profiles import get_profile
from tinylm.runs import TrainConfig

TINY = TrainConfig(
    "tiny",
    model="char-ci",
    tokenizer="char",
    batch_size=4,
    max_steps=6,
    warmup_steps=2,
    lr=3e-3,
    min_lr=3e-4,
    dropout=0.0,
    eval_interval=3,
    eval_batches=1,
    log_interval=3,
    block_size=32,
)


def test_get_trains_the_profiles_run_once_then_loads_it(workspace, one_thread):
    model, tokenizer = pretrained.get("poem-char", profile="ci", progress=False)
    out = runs.RUNS["char-ci"].out_dir  # the ci profile's run, on the synthetic poems
    assert (out / "model" / "model.safetensors").is_file()
    assert tokenizer.vocab_size <= model.config.vocab_size and not model.training
    written = folder_state(out)
    again, _ = pretrained.get(profile="ci", progress=False)
    assert folder_state(out) == written  # loaded: nothing trained, nothing written
    loaded = again.state_dict()
    for name, value in model.state_dict().items():
        assert torch.equal(value, loaded[name]), name


def test_mistral_twin_trains_its_own_run(workspace, one_thread):
    model, _ = pretrained.get("poem-mistral", profile="ci", progress=False)
    assert model.config.position == "rope" and not model.config.tie_weights
    assert (runs.RUNS["mistral-ci"].out_dir / "model" / "model.safetensors").is_file()


def test_unknown_model_lists_valid_names():
    with pytest.raises(ValueError, match="'poem-gpt5'.*'poem-char'"):
        pretrained.get("poem-gpt5")


@pytest.mark.parametrize("name", ["ci", "cpu", "gpu"])
def test_profile_runs_lists_every_run_the_notebooks_train_once(name):
    profile = get_profile(name)
    names = [cfg.run_name for cfg in pretrained.profile_runs(name)]
    assert len(names) == len(set(names))
    assert names[0] == profile.train_run  # the main model first: notebooks 03-07 need it
    assert {*profile.eval_runs, profile.mistral_run} <= set(names)
    assert {f"{model}-{steps}" for model, steps in profile.scaling_sweep} <= set(names)
    assert ("talk-30m" in names) == (name == "gpu")  # notebook 05 trains it on a GPU


def test_warm_trains_each_run_once_then_loads_them(workspace, one_thread, monkeypatch):
    sweep = replace(TINY, run_name="sweep-tiny", max_steps=3)
    monkeypatch.setattr(pretrained, "profile_runs", lambda profile=None: [TINY, sweep])
    first = pretrained.warm("ci", progress=False)
    assert [r.out_dir.name for r in first] == ["tiny", "sweep-tiny"]
    written = folder_state(workspace / "runs")
    assert len(pretrained.warm("ci", progress=False)) == 2
    assert folder_state(workspace / "runs") == written
