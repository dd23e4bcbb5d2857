import json
import shutil

import numpy as np
import pytest
import torch

from rnnembed import RnnembedError, generation
from rnnembed.language_model import LanguageModel

TINY = {"layers": 1, "hidden": 32, "batch_size": 8, "bptt": 16, "lr": 1e-2, "epochs": 0.5}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, small_corpus):
    train, valid = small_corpus
    out = tmp_path_factory.mktemp("models") / "bpe"
    LanguageModel.train([train], out, valid=[valid], tokenizer="bpe", vocab_size=300, **TINY)
    return out


def test_saved_model_reloads_with_identical_outputs(model_dir, tmp_path):
    lm = LanguageModel.load(model_dir)
    ids = torch.tensor([lm.tokenizer.encode("The for statement iterates")], device=lm.device)
    first = lm.model(ids).logits
    lm.save(tmp_path / "copy")
    again = LanguageModel.load(tmp_path / "copy")
    assert torch.equal(again.model(ids).logits, first)
    assert again.config == lm.config


def test_save_and_fingerprint_refuse_what_they_cannot_use(model_dir, tmp_path):
    lm = LanguageModel.load(model_dir)
    (tmp_path / "a-file").write_text("mine")
    for path, message in ((None, "is a path"), (tmp_path / "a-file", "is a file; give the path")):
        with pytest.raises(RnnembedError, match=message):
            lm.save(path)
    assert (tmp_path / "a-file").read_text() == "mine"
    with pytest.raises(RnnembedError, match="is a folder; give the path of a file"):
        lm.tokenizer.save(tmp_path)
    with pytest.raises(RnnembedError, match="unknown pooling"):
        lm.fingerprint(["sif"])


def test_perplexity_and_evaluate_agree(model_dir, small_corpus):
    lm = LanguageModel.load(model_dir)
    lines = small_corpus[1].read_text(encoding="utf-8").splitlines()
    result = lm.evaluate(lines)
    assert result.tokens == len(lm.tokenizer.encode("\n".join(lines))) + 1
    assert result.characters == sum(len(line) + 1 for line in lines)
    assert abs(lm.perplexity(lines) - result.perplexity) < 1e-9
    assert 1 < result.perplexity < lm.tokenizer.vocab_size
    assert result.bits_per_char == pytest.approx(
        result.loss * result.tokens / 0.6931471805599453 / result.characters
    )


def test_a_model_saved_with_values_a_new_run_would_refuse_still_loads(model_dir, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(model_dir, folder)
    train = json.loads((folder / "config.json").read_text(encoding="utf-8"))["train"]
    _edit_config(folder, train={**train, "seed": -1, "minutes": 0, "eval_tokens": 0})
    assert LanguageModel.load(folder).train_config.seed == -1  # checks guard new runs only


def test_generate_is_deterministic_under_a_seed(model_dir):
    lm = LanguageModel.load(model_dir)
    a = lm.generate("The", max_tokens=30, temperature=0.9, top_k=20, seed=7)
    b = lm.generate("The", max_tokens=30, temperature=0.9, top_k=20, seed=7)
    c = lm.generate("The", max_tokens=30, temperature=0.9, top_k=20, seed=8)
    assert a == b and a != c and a.startswith("The")
    greedy = lm.generate("The", max_tokens=10, temperature=0)
    assert greedy == lm.generate("The", max_tokens=10, temperature=0, seed=123)


def test_generate_streams_its_text_in_pieces_as_drawn(model_dir, tmp_path, small_corpus):
    lm = LanguageModel.load(model_dir)
    word = LanguageModel.train([small_corpus[0]], tmp_path / "word", tokenizer="word", **TINY)
    for model in (lm, word):
        options = {"max_tokens": 40, "temperature": 1.0, "seed": 3}
        pieces = list(model.generate_stream("The cat", **options))
        assert len(pieces) > 10 and pieces[0] == "The cat"
        assert "".join(pieces) == model.generate("The cat", **options)
    stream = lm.generate_stream("The", max_tokens=10**20, seed=0)  # drawn only when asked
    assert next(stream) == "The" and next(stream)
    stream.close()
    with pytest.raises(RnnembedError, match="temperature must be at least 0"):
        next(lm.generate_stream("The", temperature=-1))  # before the prompt comes back


def test_generate_returns_the_prompt_as_given(model_dir, tmp_path, small_corpus):
    lm = LanguageModel.load(model_dir)
    prompt = "Zyzzyva said:  héllo\tthere"
    assert lm.generate(prompt, max_tokens=5, seed=1).startswith(prompt)
    word = LanguageModel.train([small_corpus[0]], tmp_path / "word", tokenizer="word", **TINY)
    text = word.generate(prompt, max_tokens=5, seed=1)  # its <unk> ids do not replace the words
    assert text.startswith(prompt) and "<unk>" not in text[: len(prompt)]
    assert text[len(prompt)] in " \n"  # the drawn words come after a space or a line break
    with pytest.raises(RnnembedError, match="prompt 0 is NoneType, not a string"):
        lm.generate(None)


@pytest.mark.parametrize(
    "options",
    [
        {"max_tokens": -1},
        {"temperature": -0.5},
        {"temperature": float("nan")},
        {"top_k": -3},
        {"top_p": 0},
        {"top_p": 1.5},
        {"seed": 2**64},
        {"seed": 1.5},
    ],
)
def test_generate_refuses_settings_it_cannot_sample_with(model_dir, options):
    lm = LanguageModel.load(model_dir)
    ((name, value),) = options.items()
    with pytest.raises(RnnembedError, match=rf"^{name} must be .*, not {value}$"):
        lm.generate("The", **{"max_tokens": 5, **options})


def test_sampling_settings_of_the_wrong_type_and_texts_that_are_not_lists(model_dir):
    lm = LanguageModel.load(model_dir)
    for options in ({"max_tokens": 2.5}, {"top_k": 1.5}, {"top_p": "0.5"}):
        with pytest.raises(RnnembedError, match="must be whole numbers, temperature and top_p"):
            lm.generate("The", **options)
    assert lm.generate("The", max_tokens=8, temperature=1e-45) == lm.generate(
        "The", max_tokens=8, temperature=0
    )  # a temperature so small that the scaled logits overflow samples greedily
    for top_p in (1e-50, 1e-300):  # 0 in float32: the likeliest token is still kept
        assert lm.generate("The", max_tokens=8, top_p=top_p, seed=1) == lm.generate(
            "The", max_tokens=8, temperature=0
        )
    with pytest.raises(RnnembedError, match="texts must be a list of strings, not str"):
        lm.perplexity("read one character per line")
    assert lm.generate("The", max_tokens=4, temperature=np.float32(0.5), seed=np.int64(1)) == (
        lm.generate("The", max_tokens=4, temperature=0.5, seed=1)
    )
    with pytest.raises(RnnembedError, match="the corpus must be a list of files or folders, not"):
        lm.evaluate_files("held-out.txt")  # read per character, "/data" walked the whole disk


def test_a_device_this_machine_lacks_is_a_clear_error(model_dir):
    for name in ("gpu0", "mps", "meta"):  # torch knows the last two; rnnembed runs on cpu, cuda
        with pytest.raises(RnnembedError, match=f"unknown device '{name}'"):
            LanguageModel.load(model_dir, device=name)
    with pytest.raises(
        RnnembedError, match=r"a model folder is a path \(str or Path\), not NoneType"
    ):
        LanguageModel.load(None)
    if not torch.cuda.is_available():
        with pytest.raises(RnnembedError, match="PyTorch sees no CUDA GPU here"):
            LanguageModel.load(model_dir, device="cuda")


def test_a_long_prompt_is_read_in_windows_with_the_same_result(model_dir, monkeypatch):
    lm = LanguageModel.load(model_dir)
    prompt = "The quick brown fox jumps over the lazy dog. " * 4
    whole = lm.generate(prompt, max_tokens=12, temperature=0)
    monkeypatch.setattr(generation, "CONTEXT_WINDOW", 5)
    assert lm.generate(prompt, max_tokens=12, temperature=0) == whole


def test_eval_of_bad_files_is_a_clear_error(model_dir, tmp_path):
    lm = LanguageModel.load(model_dir)
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"caf\xe9\n")
    with pytest.raises(RnnembedError, match="no such file"):
        lm.evaluate_files([tmp_path / "absent.txt"])
    with pytest.raises(RnnembedError, match="empty"):
        lm.evaluate_files([empty])
    with pytest.raises(RnnembedError, match="--encoding cp1252"):
        lm.evaluate_files([latin])


def _edit_config(folder, **changes):
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    (folder / "config.json").write_text(json.dumps({**config, **changes}), encoding="utf-8")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (  # not "resume it": the run had saved them, and its checkpoint has the last step's
            lambda d: (d / "model.safetensors").unlink(),
            r"model.safetensors: missing \(the run saved its best weights here and they were",
        ),
        (lambda d: (d / "model.safetensors").write_bytes(b"\x00" * 64), "damaged"),
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "config.json").write_text("{oops"), "config.json: damaged"),
        (lambda d: _edit_config(d, train="x"), "config.json: damaged"),
        (  # read for its truth, "no" would send the load after backward weights that are not there
            lambda d: _edit_config(d, train={"bidirectional": "no"}),
            r"config.json: damaged \(bidirectional must be bool, not 'no'\)",
        ),
        (lambda d: _edit_config(d, model={"vocab_size": 300, "cell": "x"}), "unknown cell 'x'"),
        (
            lambda d: _edit_config(d, model={"vocab_size": 300, "softmax": "adaptive"}),
            r"damaged \(an adaptive softmax needs cutoffs .*not \[\]\); restore it or retrain",
        ),
        (lambda d: (d / "tokenizer.json").unlink(), "no tokenizer file"),
        (lambda d: (d / "tokenizer.json").write_text("[]"), "not an rnnembed tokenizer"),
    ],
)
def test_a_damaged_model_folder_is_a_clear_error(model_dir, tmp_path, damage, message):
    broken = tmp_path / "broken"
    shutil.copytree(model_dir, broken)
    damage(broken)
    with pytest.raises(RnnembedError, match=message):
        LanguageModel.load(broken)


def test_weights_of_another_shape_are_refused(model_dir, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    config = json.loads((other / "config.json").read_text())
    config["model"]["hidden"] = 48
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(RnnembedError, match="damaged or from another model"):
        LanguageModel.load(other)
