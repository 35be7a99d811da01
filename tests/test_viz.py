"""Reading recorded reference runs: GPU and CPU files are told apart by the machine they ran on."""

import json

import pytest
import torch

from tinylm import viz
from tinylm.reference import REFERENCE_DIR


def machine(device: str, name: str, date: str) -> dict:
    return {"device": device, "device_name": name, "date": date}


def run(name: str, val_loss: float) -> dict:
    return {
        "run": name,
        "tokenizer": "gpt2",
        "val_loss": val_loss,
        "tokens": 300,
        "curve": {
            "step": [0, 1, 2],
            "tokens": [0, 100, 300],
            "val_loss": [9.0, 5.0, val_loss],
            "eval_train_loss": [9.0, 5.0, val_loss],
        },
    }


def write(folder, name: str, content: dict) -> None:
    (folder / name).write_text(json.dumps(content), encoding="utf-8")


@pytest.fixture
def reference(tmp_path):
    """A data/reference folder with a CPU record, two GPU records and a mislabelled file."""
    write(
        tmp_path,
        "runs_cpu.json",
        {
            "benchmark": "runs",
            "machine": machine("cpu", "AMD EPYC", "2026-01-01T00:00:00+00:00"),
            "results": [run("char-cpu", 4.9)],
        },
    )
    write(
        tmp_path,
        "runs_cuda-nvidia-a10g.json",
        {
            "benchmark": "runs",
            "machine": machine("cuda", "NVIDIA A10G", "2026-01-02T00:00:00+00:00"),
            "results": [run("talk-30m", 3.1), run("talk-124m", 2.9)],
        },
    )
    write(
        tmp_path,
        "runs_cuda-nvidia-h100.json",
        {
            "benchmark": "runs",
            "machine": machine("cuda:0", "NVIDIA H100", "2026-01-03T00:00:00+00:00"),
            "results": [run("talk-30m", 3.0)],
        },
    )
    # named like a GPU file but recorded on a CPU: the machine record wins
    write(
        tmp_path,
        "runs_cuda-oops.json",
        {
            "benchmark": "runs",
            "machine": machine("cpu", "AMD EPYC", "2026-01-04T00:00:00+00:00"),
            "results": [run("talk-30m", 7.0)],
        },
    )
    # a poem report has no machine record: its name's device slug decides
    write(tmp_path, "eval_talk-30m_cuda-nvidia-h100.json", {"finished": 0.9})
    write(tmp_path, "eval_char-cpu_cpu.json", {"finished": 0.8})
    write(tmp_path, "scaling_sweep_cpu.json", {"machine": machine("cpu", "AMD EPYC", "")})
    return tmp_path


def test_gpu_runs_never_include_a_cpu_record(reference):
    runs = viz.reference_runs("cuda", reference)
    assert set(runs) == {"talk-30m", "talk-124m"}
    assert runs["talk-30m"]["machine"]["device_name"] == "NVIDIA H100"  # the most recent
    assert runs["talk-30m"]["file"] == "runs_cuda-nvidia-h100.json"
    assert runs["talk-30m"]["curve"]["val_loss"][-1] == 3.0
    assert runs["talk-124m"]["machine"]["device_name"] == "NVIDIA A10G"
    assert all(r["machine"]["device"].startswith("cuda") for r in runs.values())


def test_cpu_runs_and_other_files(reference):
    cpu = viz.reference_runs("cpu", reference)
    assert set(cpu) == {"char-cpu", "talk-30m"}
    assert cpu["talk-30m"]["file"] == "runs_cuda-oops.json"  # a CPU run, whatever its name
    assert list(viz.reference_files("eval", "cuda", reference)) == [
        "eval_talk-30m_cuda-nvidia-h100.json"
    ]
    assert list(viz.reference_files("eval", "cpu", reference)) == ["eval_char-cpu_cpu.json"]
    assert list(viz.reference_files("scaling_sweep", "cpu", reference)) == [
        "scaling_sweep_cpu.json"
    ]
    assert viz.reference_runs("mps", reference) == {}


def test_nothing_recorded(tmp_path):
    assert viz.reference_runs("cuda", tmp_path) == {}
    assert viz.reference_files("bench_train_throughput", "cuda", tmp_path / "missing") == {}
    with pytest.raises(ValueError, match="kind"):
        viz.reference_runs("gpu", tmp_path)


def test_broken_file_is_named(tmp_path):
    (tmp_path / "runs_cuda-x.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="runs_cuda-x.json"):
        viz.reference_runs("cuda", tmp_path)


def test_committed_references_are_named_for_their_device():
    """A file copied into data/reference/ says "cuda" in its name exactly when it ran on a GPU."""
    for path in sorted(REFERENCE_DIR.glob("*.json")):
        recorded = json.loads(path.read_text(encoding="utf-8"))
        device = recorded.get("machine", {}).get("device") if isinstance(recorded, dict) else None
        if device:
            assert ("cuda" in path.name) == device.startswith("cuda"), (path.name, device)


def test_chinese_and_symbols_render_without_missing_glyphs(tmp_path):
    import warnings

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = viz.use_cjk_font()
    assert name == "Noto Sans SC", "the course's font comes with its dependencies"
    fig, ax = plt.subplots()
    ax.set_title("床前明月光 ↵ ⟨eot⟩ −1")
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message="Glyph .* missing")
        fig.savefig(tmp_path / "plot.png")
    plt.close(fig)


def test_head_view_is_offline():
    attention = [torch.softmax(torch.randn(1, 2, 4, 4), dim=-1) for _ in range(2)]
    html = viz.head_view(attention, list("春眠不觉")).data
    assert 'src="http' not in html, "no script may come from the network"
    assert "require.config" not in html and "requirejs(" not in html
    assert "d3js.org v5.7.0" in html and "jQuery v3.7.1" in html


def uniform_causal(batch: int, heads: int, length: int) -> torch.Tensor:
    """Weights of a head that spreads each query evenly over the keys it may see."""
    mask = torch.tril(torch.ones(length, length))
    return (mask / mask.sum(-1, keepdim=True)).expand(batch, heads, length, length).clone()


def test_uniform_attention_gets_exactly_its_share():
    tokens = ["⟨eot⟩", "床", "前", "，", "月", "。", "\n", "光"]
    stripes = viz.stripe_mass([uniform_causal(1, 2, 8)] * 3, tokens)
    assert stripes.first.shape == stripes.punctuation.shape == (3, 2)
    # queries 1..7 see 2..8 keys: 1/(i+1) on position 0; punctuation at 3, 5, 6
    first = sum(1 / n for n in range(2, 9)) / 7
    punct = (0 + 0 + 1 / 4 + 1 / 5 + 2 / 6 + 3 / 7 + 3 / 8) / 7
    assert stripes.first_uniform == pytest.approx(first)
    assert stripes.punctuation_uniform == pytest.approx(punct)
    assert torch.allclose(stripes.first, torch.full((3, 2), first))
    assert torch.allclose(stripes.punctuation, torch.full((3, 2), punct))
    assert torch.allclose(stripes.first_excess, torch.ones(3, 2))
    assert torch.allclose(stripes.punctuation_excess, torch.ones(3, 2))


def test_a_sink_head_and_a_punctuation_head_stand_out():
    tokens = ["⟨eot⟩", "床", "，", "月", "。"]
    sink = torch.zeros(1, 1, 5, 5)
    sink[..., 0] = 1.0  # every query on position 0: the attention sink
    last_mark = torch.zeros(1, 1, 5, 5)  # each query on the latest punctuation, else on itself
    for query, key in enumerate([0, 1, 2, 2, 4]):
        last_mark[0, 0, query, key] = 1.0
    stripes = viz.stripe_mass([torch.cat([sink, last_mark], dim=1)], tokens)
    assert stripes.first.tolist() == [[1.0, 0.0]]
    assert stripes.punctuation.tolist() == [[0.0, 0.75]]  # queries 2, 3, 4 of 1..4
    assert stripes.first_excess[0, 0] > 2 and stripes.punctuation_excess[0, 1] > 2


def test_position_0_is_never_punctuation_and_rows_may_differ():
    first_row, second_row = ["\n", "a", "。"], ["<s>", "。", "b"]
    weights = uniform_causal(2, 1, 3)
    stripes = viz.stripe_mass([weights], [first_row, second_row])
    # row 1: "。" at 2 only (the leading "\n" is position 0); row 2: "。" at 1
    expected = ((0 + 1 / 3) + (1 / 2 + 1 / 3)) / 4
    assert stripes.punctuation_uniform == pytest.approx(expected)
    assert stripes.punctuation[0, 0].item() == pytest.approx(expected)
    assert viz.is_punctuation("。\n") and viz.is_punctuation("：")
    assert not viz.is_punctuation("") and not viz.is_punctuation("月。")


def test_no_punctuation_gives_nan_excess_not_a_division_error():
    stripes = viz.stripe_mass([uniform_causal(1, 1, 3)], list("床前月"))
    assert stripes.punctuation_uniform == 0.0
    assert torch.isnan(stripes.punctuation_excess).all()


@pytest.mark.parametrize(
    ("attention", "tokens", "message"),
    [
        ([], list("ab"), "attention is empty"),
        ([torch.ones(2, 2)], list("ab"), r"\(B, n_head, T, T\)"),
        ([torch.ones(1, 1, 1, 1)], ["a"], "at least 2 positions"),
        ([torch.ones(1, 1, 3, 3)], list("ab"), "tokens must be 3 strings"),
        ([torch.ones(2, 1, 2, 2)], [list("ab")], r"or 2 lists of 2"),
    ],
)
def test_stripe_mass_names_what_is_wrong(attention, tokens, message):
    with pytest.raises(ValueError, match=message):
        viz.stripe_mass(attention, tokens)
