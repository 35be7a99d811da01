"""The data pipeline on synthetic files: fetch and verify, clean, split, pack, batches."""

import errno
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from synthetic import synthetic_corpus

from tinylm import cleaning, data, download
from tinylm.cleaning import Poem
from tinylm.download import DataError, Manifest, ManifestFile

POEMS = [
    {
        "title": "静夜思",
        "author": "李白",
        "paragraphs": ["床前明月光，疑是地上霜。", "举头望明月，低头思故乡。"],
    },
    {
        "title": "春晓",
        "author": "孟浩然",
        "paragraphs": ["春眠不觉晓，处处闻啼鸟。", "夜来风雨声，花落知多少。"],
    },
]


def make_mirror(tmp_path: Path, files: dict[str, bytes]) -> tuple[Path, Manifest]:
    """A mirror folder holding `files` and a manifest that lists them with true checksums."""
    root = tmp_path / "mirror" / "repo"
    entries = []
    for rel, content in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(content)
        sha = hashlib.sha256(content).hexdigest()
        entries.append(ManifestFile(rel, sha, len(content), "tang"))
    manifest = Manifest("0" * 40, "http://127.0.0.1:9/{commit}/{path}", "repo", tuple(entries))
    return tmp_path / "mirror", manifest


def poem_file(poems: list[dict]) -> bytes:
    return json.dumps(poems, ensure_ascii=False).encode()


@pytest.fixture
def mirror(tmp_path):
    return make_mirror(
        tmp_path,
        {
            "全唐诗/poet.tang.0.json": poem_file(POEMS),
            "全唐诗/poet.tang.1000.json": poem_file(POEMS[:1]),
        },
    )


def test_fetch_copies_and_verifies_from_mirror(tmp_path, mirror):
    mirror_dir, manifest = mirror
    dest = download.fetch(
        dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False
    )
    assert (dest / "全唐诗/poet.tang.0.json").read_bytes() == poem_file(POEMS)
    poems = cleaning.load_poems(dest, manifest)
    assert [p.title for p in poems] == ["静夜思", "春晓", "静夜思"]


def test_fetch_skips_files_already_verified(tmp_path, mirror, monkeypatch):
    mirror_dir, manifest = mirror
    download.fetch(dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False)

    def fail(*args):
        raise AssertionError("a verified file was copied again")

    monkeypatch.setattr(download.shutil, "copyfile", fail)
    download.fetch(dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False)


def test_checksum_mismatch_is_reported_and_nothing_kept(tmp_path, mirror):
    mirror_dir, manifest = mirror
    (mirror_dir / "repo/全唐诗/poet.tang.1000.json").write_bytes(b"[]")
    with pytest.raises(DataError, match="Checksum mismatch for 全唐诗/poet.tang.1000.json"):
        download.fetch(dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False)
    leftovers = sorted(p.name for p in (tmp_path / "raw/全唐诗").iterdir())
    assert leftovers == ["poet.tang.0.json"]  # the good file stays, no bad file, no .part


def test_missing_mirror_folder_says_which_variable(tmp_path, mirror):
    _, manifest = mirror
    with pytest.raises(DataError, match=download.MIRROR_ENV):
        download.fetch(dest=tmp_path / "raw", mirror=tmp_path / "nowhere", manifest=manifest)


def test_mirror_missing_a_file_names_it(tmp_path, mirror):
    mirror_dir, manifest = mirror
    (mirror_dir / "repo/全唐诗/poet.tang.1000.json").unlink()
    with pytest.raises(DataError, match="poet.tang.1000.json"):
        download.fetch(dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False)


def test_no_network_and_no_mirror(tmp_path, mirror, monkeypatch):
    _, manifest = mirror
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)
    with pytest.raises(DataError, match="Could not download .*no internet access"):
        download.fetch(dest=tmp_path / "raw", manifest=manifest, progress=False)
    assert not list((tmp_path / "raw").rglob("*.json*"))


def test_interrupted_download_leaves_nothing_behind(tmp_path, mirror, monkeypatch):
    _, manifest = mirror
    monkeypatch.delenv(download.MIRROR_ENV, raising=False)

    def half_then_killed(url, partial):
        partial.write_bytes(b'[{"title": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(download, "_download", half_then_killed)
    with pytest.raises(KeyboardInterrupt):
        download.fetch(dest=tmp_path / "raw", manifest=manifest, progress=False)
    assert not [p for p in (tmp_path / "raw").rglob("*") if p.is_file()]


def test_corrupt_json_names_the_file(tmp_path):
    mirror_dir, manifest = make_mirror(tmp_path, {"全唐诗/poet.tang.0.json": b'[{"title": "x",'})
    dest = download.fetch(
        dest=tmp_path / "raw", mirror=mirror_dir, manifest=manifest, progress=False
    )
    with pytest.raises(DataError, match=r"poet\.tang\.0\.json is not a valid (poem|JSON) file"):
        cleaning.load_poems(dest, manifest)


def test_to_simplified_converts_every_field():
    (poem,) = cleaning.to_simplified([Poem("帝京篇", "太宗皇帝", "秦川雄帝宅，函谷壯皇居。")])
    assert poem == Poem("帝京篇", "太宗皇帝", "秦川雄帝宅，函谷壮皇居。")


def test_clean_removes_notes_and_drops_lost_characters():
    poems = [
        Poem(" 题二首\u3000 一 ", "甲", "山高月小，（一作水落）石出天青。\n（按：见某书）"),
        Poem("补", "乙", "[白]日依山尽，黄河入海流。"),
        Poem("缺", "丙", "□□依山尽，黄河入海流。"),
        Poem("缺二", "丁", "疲{艹尔}苟怀策，栖屑无所施。"),
        Poem("空", "戊", "（以上见某书）"),
        Poem("空格", "己", "白 日依山尽，\t黄河入海流。"),
    ]
    kept, report = cleaning.clean_poems(poems)
    assert [p.content for p in kept] == [
        "山高月小，石出天青。",
        "白日依山尽，黄河入海流。",
        "白日依山尽，黄河入海流。",
    ]
    assert kept[0].title == "题二首 一"
    assert (report.notes_removed, report.insertions_unwrapped) == (3, 1)
    assert (report.placeholder_poems, report.empty_poems, report.poems_out) == (2, 1, 3)
    assert report.placeholder_chars == {"□": 2, "{…}": 1}


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("别苏徯（赴湖南幕）", "别苏徯"),
        ("晚次（一作「歇」）湘源县", "晚次湘源县"),
        ("兵要望江南 委任第一（京本作「占委任第一」二十六首） 二", "兵要望江南 委任第一 二"),
        ("度大臾（庾）岭（其二（伯三六一九））", "度大臾岭"),
        ("渡江（《十国春秋》三。前四句引", "渡江"),
        ("咏物[一]十首〖2〗", "咏物十首"),
        ("郊庙歌辞 祭[太]社乐章", "郊庙歌辞 祭太社乐章"),
        ("诗三百三首 一三○", "诗三百三首 一三〇"),
        ("灵隐寺”", "灵隐寺"),
        (" 题二首\u3000 一 ", "题二首 一"),
    ],
)
def test_clean_title(raw, clean):
    assert cleaning.clean_title(raw) == clean


def test_clean_drops_poems_whose_title_lost_characters():
    poems = [
        Poem("思君吟寄□□生", "甲", "白日依山尽，黄河入海流。"),
        Poem("送{巩/言}光大师", "乙", "欲穷千里目，更上一层楼。"),
        Poem("题（伯三四八○）", "丙", "春眠不觉晓，处处闻啼鸟。"),
    ]
    kept, report = cleaning.clean_poems(poems)
    assert [p.title for p in kept] == ["题"]
    assert (report.placeholder_poems, report.placeholder_titles, report.titles_cleaned) == (2, 2, 1)
    assert report.placeholder_chars == {"□": 2, "{…}": 1}


def test_deduplicate_keeps_first_body():
    poems = [Poem("a", "x", "同一首诗。"), Poem("b", "y", "另一首。"), Poem("c", "z", "同一首诗。")]
    kept, removed = cleaning.deduplicate(poems)
    assert [p.title for p in kept] == ["a", "b"] and removed == 1


@pytest.mark.parametrize("method", cleaning.SPLIT_METHODS)
def test_split_by_poem(method):
    poems = [Poem(str(i), "x", f"诗{i}") for i in range(100)]
    train, val = cleaning.split_poems(poems, 0.1, method, seed=3)
    assert len(val) == 10 and len(train) == 90
    assert {p.title for p in train}.isdisjoint(p.title for p in val)
    assert cleaning.split_poems(poems, 0.1, method, seed=3) == (train, val)
    if method == "last":
        assert [p.title for p in val] == [str(i) for i in range(90, 100)]


def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match="random"):
        cleaning.split_poems([Poem("a", "b", "c")] * 10, method="first")
    with pytest.raises(ValueError, match="val_fraction"):
        cleaning.split_poems([Poem("a", "b", "c")] * 10, val_fraction=1.5)


def test_poem_text_is_title_author_content():
    assert Poem("春晓", "孟浩然", "春眠不觉晓").text == "春晓\n孟浩然\n春眠不觉晓"


def test_pack_dtype_and_end_of_text_positions():
    assert data.token_dtype(9_000) == np.uint16
    assert data.token_dtype(65_536) == np.uint16
    assert data.token_dtype(100_277) == np.uint32
    packed = data.pack([[5, 6, 7], [], [8]], eot_id=0, dtype=np.dtype(np.uint16))
    assert packed.dtype == np.uint16
    assert packed.tolist() == [5, 6, 7, 0, 0, 8, 0]
    big = data.pack([[70_000]], eot_id=100_000, dtype=data.token_dtype(100_277))
    assert big.tolist() == [70_000, 100_000]


def test_prepare_packs_and_reuses_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    corpus = synthetic_corpus()
    packed = data.prepare("char", corpus=corpus)
    tok = packed.tokenizer
    assert packed.meta["dtype"] == "uint16" and packed.train.dtype == np.uint16
    assert packed.meta["counts"]["train_poems"] == len(corpus.train)
    assert int((np.asarray(packed.train) == tok.eot_id).sum()) == len(corpus.train)
    first = np.asarray(packed.train[: packed.train.tolist().index(tok.eot_id)])
    assert tok.decode(first.tolist()) == corpus.train[0].text
    assert data.is_prepared("char")

    def fail(*args, **kwargs):
        raise AssertionError("an up-to-date tokenization was rebuilt")

    monkeypatch.setattr(data, "load_corpus", fail)
    monkeypatch.setattr(data, "pack", fail)
    assert data.prepare("char", corpus=corpus).meta == packed.meta


def test_stale_or_half_written_cache_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    corpus = synthetic_corpus()
    folder = data.prepare("char", corpus=corpus).path
    meta = json.loads((folder / "meta.json").read_text())
    meta["inputs_hash"] = "from-an-older-pipeline"
    (folder / "meta.json").write_text(json.dumps(meta))
    assert not data.is_prepared("char")
    (folder / "meta.json").unlink()  # a run killed before meta.json was written
    assert not data.is_prepared("char")
    assert data.prepare("char", corpus=corpus).meta["inputs_hash"] != "from-an-older-pipeline"


@pytest.mark.parametrize(
    ("name", "size"),
    [("train.bin", 100), ("train.bin", -1), ("val.bin", 0), ("tokenizer.json", 50)],
)
def test_damaged_packed_files_are_named_and_rebuilt(tmp_path, monkeypatch, name, size):
    """Issue 14, cases 2 and 9: a cut-short file was trained on, or failed without its name."""
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    corpus = synthetic_corpus()
    packed = data.prepare("char", corpus=corpus)
    path = packed.path / name
    whole = path.read_bytes()
    path.write_bytes(whole[:size])  # -1: one byte short
    assert not data.is_prepared("char")
    for load in (data.load_packed, lambda tokenizer: data.prepare(tokenizer, repair=False)):
        with pytest.raises(
            DataError,
            match=rf"{name} has [\d,]+ bytes where meta.json records "
            rf"{len(whole):,}.*`python -m tinylm data --tokenizer char`",
        ):
            load("char")
    rebuilt = data.prepare("char", corpus=corpus)  # what `python -m tinylm data` does
    assert path.read_bytes() == whole and rebuilt.meta == packed.meta
    assert data.is_prepared("char")


def test_changed_packed_files_and_old_metas(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    corpus = synthetic_corpus()
    folder = data.prepare("char", corpus=corpus).path
    train_bin = bytearray((folder / "train.bin").read_bytes())
    train_bin[10] ^= 1  # same size, one token changed
    (folder / "train.bin").write_bytes(train_bin)
    with pytest.raises(DataError, match="train.bin has changed since it was written"):
        data.load_packed("char")
    meta = json.loads((folder / "meta.json").read_text())
    del meta["files"]  # as written before meta.json recorded checksums
    (folder / "meta.json").write_text(json.dumps(meta))
    assert not data.is_prepared("char")
    assert data.prepare("char", corpus=corpus, repair=False).meta["files"]  # rebuilt quietly


def test_load_packed_without_prepare_says_what_to_run(tmp_path, monkeypatch):
    monkeypatch.setenv(download.DATA_DIR_ENV, str(tmp_path))
    with pytest.raises(DataError, match="python -m tinylm data --tokenizer gpt2"):
        data.load_packed("gpt2")


def test_batch_sampler_shapes_and_shift():
    tokens = np.arange(1000, dtype=np.uint16)
    sampler = data.BatchSampler(tokens, batch_size=4, block_size=16, seed=0)
    x, y = next(sampler)
    assert x.shape == y.shape == (4, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y[:, :-1], x[:, 1:])
    assert torch.equal(y, x + 1)  # in this array the next token is always id + 1
    x2, _ = data.BatchSampler(tokens, 4, 16, seed=0).sample()
    assert torch.equal(x, x2)


def test_resident_sampler_draws_the_same_batches():
    tokens = np.random.default_rng(0).integers(0, 60000, 5000).astype(np.uint16)
    host = data.BatchSampler(tokens, batch_size=4, block_size=16, seed=3)
    resident = data.BatchSampler(tokens, batch_size=4, block_size=16, seed=3, resident=True)
    for _ in range(3):
        (x, y), (rx, ry) = host.sample(), resident.sample()
        assert torch.equal(x, rx) and torch.equal(y, ry) and rx.dtype == torch.int64
        assert rx.is_contiguous() and ry.is_contiguous()  # the loss flattens y with view(-1)
    assert resident.tokens.dtype == torch.int32  # uint16 ids above 32,767 survive the cast


def test_batch_sampler_rejects_too_little_data():
    with pytest.raises(ValueError, match="block_size"):
        data.BatchSampler(np.arange(8, dtype=np.uint16), batch_size=2, block_size=8)


def test_document_windows_start_at_end_of_text():
    eot = 99
    docs = [[1, 2, 3], [4, 5, 6, 7, 8], [9, 10], [11, 12, 13, 14]] * 20
    tokens = data.pack(docs, eot, np.dtype(np.uint16))
    sampler = data.BatchSampler(tokens, batch_size=8, block_size=6, seed=0, start_token=eot)
    resident = data.BatchSampler(
        tokens, batch_size=8, block_size=6, seed=0, start_token=eot, resident=True
    )
    for _ in range(5):
        (x, y), (rx, ry) = sampler.sample(), resident.sample()
        assert (x[:, 0] == eot).all()  # position 0 is always where a document starts
        assert set(x[:, 1].tolist()) <= {1, 4, 9, 11}  # then a document's first token
        assert torch.equal(y[:, :-1], x[:, 1:])
        assert torch.equal(x, rx) and torch.equal(y, ry)
    starts = {int(s) for s in sampler.starts}
    assert starts == {int(i) for i in np.flatnonzero(tokens[: len(tokens) - 6] == eot)}


def test_document_windows_need_a_start_token_with_room_after_it():
    with pytest.raises(ValueError, match="start_token"):
        data.BatchSampler(
            np.arange(50, dtype=np.uint16), batch_size=2, block_size=8, start_token=49
        )


@pytest.mark.parametrize(
    ("field", "lie", "says"),
    [
        ("dtype", "uint8", "says the tokens are 'uint8', but a vocabulary of"),
        ("dtype", "bogus", "says the tokens are 'bogus'"),
        ("vocab_size", None, "records no vocabulary size"),
        ("files", {"train.bin": {}}, "records no file checksums"),
    ],
)
def test_a_lying_meta_json_is_rebuilt_not_trusted(workspace, field, lie, says):
    meta_path = data.packed_dir("char") / "meta.json"
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    meta_path.write_text(json.dumps({**meta, field: lie}), encoding="utf-8")
    assert not data.is_prepared("char")  # so `python -m tinylm data` rebuilds it
    with pytest.raises(DataError, match=f"{says}.*python -m tinylm data --tokenizer char"):
        data.load_packed("char")
    rebuilt = data.prepare("char", corpus=synthetic_corpus())
    assert rebuilt.meta[field] == meta[field] and data.is_prepared("char")


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (Linux)")
def test_an_array_that_cannot_be_written_leaves_no_partial_file(tmp_path):
    (tmp_path / "train.bin.part").symlink_to("/dev/full")  # every write: "No space left"
    with pytest.raises(OSError, match="No space left") as info:
        data.write_array(np.arange(10_000, dtype=np.uint16), tmp_path / "train.bin")
    assert info.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_packing_names_the_folder_and_the_space(workspace, monkeypatch):
    from tinylm import cli

    def disk_full(array, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(data, "write_array", disk_full)
    with pytest.raises(
        OSError, match=r"could not write the packed data into .*about \d+ MB"
    ) as info:
        data.prepare("char", corpus=synthetic_corpus(), force=True)
    message = cli.os_error_message(info.value)
    assert "\n" not in message and f"set {download.DATA_DIR_ENV} to a folder on another" in message
