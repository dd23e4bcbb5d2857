"""LanguageModel: a tokenizer, a RecurrentLM and their configs, the object users hold.

A trained model is a folder: ``config.json``, ``model.safetensors``, ``tokenizer.json``,
``metrics.jsonl``, ``training_curve.png`` and ``checkpoint/`` (what ``resume`` needs).
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
from safetensors.torch import load_file

from rnnembed import embedding
from rnnembed.atomic import atomic_path, atomic_write, check_path, check_writable, save_tensors
from rnnembed.config import DEFAULT_TEMPERATURE, JsonConfig, check_flag, is_whole
from rnnembed.corpus import MODEL_FILES, iter_texts
from rnnembed.embedding import DEFAULT_POOLING, EmbeddingStream, check_pooling
from rnnembed.errors import RnnembedError
from rnnembed.generation import sample
from rnnembed.model import ModelConfig, RecurrentLM, State, stream_loss
from rnnembed.perplexity import Evaluation
from rnnembed.tokenizer import (
    Tokenizer,
    check_text,
    check_texts,
    tokenizer_file,
    tokenizer_for,
)
from rnnembed.training import (
    CHECKPOINT,
    METRICS,
    TrainConfig,
    Trainer,
    TrainResult,
    check_corpus_size,
    check_model_fits,
    choose_defaults,
    load_model_tensors,
    model_config,
    model_tensors,
    pick_device,
    read_metrics,
)

C = TypeVar("C", bound=JsonConfig)
log = logging.getLogger(__name__)

CONFIG, TOKENIZER = MODEL_FILES  # config.json, tokenizer.json
WEIGHTS = "model.safetensors"
CURVE = "training_curve.png"
BACKWARD = "backward"  # the folder of a bidirectional model's backward half
VALID_FRACTION, VALID_MAX_TOKENS = 0.05, 200_000


class LanguageModel:
    """A trained recurrent language model and its tokenizer; a bidirectional one also has a
    ``backward`` model (trained on reversed text) that embeddings read the text with."""

    default_pooling = DEFAULT_POOLING

    def __init__(
        self,
        model: RecurrentLM,
        tokenizer: Tokenizer,
        train_config: TrainConfig | None = None,
        backward: RecurrentLM | None = None,
    ):
        self.model = model
        self.backward = backward
        self.tokenizer = tokenizer
        self.train_config = train_config or TrainConfig()
        self.results: list[TrainResult] = []  # of the last training: forward (, backward)
        self._fingerprints: dict[str, str] = {}
        self._start_states: dict[bool, State] = {}  # by direction: backward or not

    @property
    def last_result(self) -> TrainResult | None:
        """The (forward) model's training result, after :meth:`train`."""
        return self.results[0] if self.results else None

    @property
    def config(self) -> ModelConfig:
        return self.model.config

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # -- training ----------------------------------------------------------------------------

    @classmethod
    def train(
        cls,
        corpus: Sequence[str | Path],
        out: str | Path,
        *,
        valid: Sequence[str | Path] | None = None,
        tokenizer: str | None = None,
        vocab_size: int | None = None,
        encoding: str = "utf-8",
        field: str = "text",
        column: str = "text",
        resume: bool = False,
        progress: bool = False,
        **options,
    ) -> LanguageModel:
        """Train on the files and folders in ``corpus`` and write the model folder ``out``.

        ``options`` are :class:`TrainConfig` fields (``cell``, ``layers``, ``hidden``,
        ``minutes``, ``epochs``, ``seed``, ``bidirectional``, ...); what is left open is chosen
        for the budget; ``tokenizer`` (char, word or bpe, the default) and ``vocab_size`` shape
        the tokenizer. With ``resume`` the run in ``out`` continues where its last checkpoint
        left it, with its saved settings and tokenizer: options given then must equal them, but
        ``device`` may differ. A bidirectional model trains a forward LM into ``out``, then a
        backward one (on the reversed token stream) into ``out/backward``, each on half of a
        time budget. On the CPU, training tunes glibc's malloc for the rest of the process
        (:func:`rnnembed.training.keep_freed_memory`).
        """
        check_flag(resume, "resume")
        if vocab_size is not None and not is_whole(vocab_size):
            raise RnnembedError(f"vocab_size must be a whole number, not {vocab_size!r}")
        vocab_size = None if vocab_size is None else int(vocab_size)  # numpy's too, for JSON
        out = _model_folder(out)
        read = {"encoding": encoding, "field": field, "column": column}
        unknown = set(options) - set(TrainConfig.__dataclass_fields__)
        if unknown:
            raise RnnembedError(f"unknown training options: {', '.join(sorted(unknown))}")
        if resume:
            if not (out / CONFIG).is_file():
                raise RnnembedError(
                    f"{out}: nothing to resume here (no {CONFIG}); start a run without --resume"
                )
            saved = _read_config(out)
            config = _saved_config(out, TrainConfig, lambda: saved.get("train", {}))
            if "device" in options:  # where a run continues is the user's choice, not a setting
                config.device = options.pop("device")
            else:
                try:
                    pick_device(config.device)
                except RnnembedError:
                    raise RnnembedError(
                        f"{out}: the run was started on device {config.device!r}, which this "
                        "machine lacks; resume it with --device auto (or cpu)"
                    ) from None
            config.check()  # as a new run's: make_optimizer and use_bf16 trust the config
            stopped = _stopped_as_it_started(out)
            if stopped:
                raise stopped
            tok = Tokenizer.load(out / TOKENIZER)
            made_with = tokenizer_file(tokenizer) if tokenizer else None
            if made_with is not None:  # the file the run started from: no change
                if Tokenizer.load(made_with).to_dict() != tok.to_dict():
                    raise RnnembedError(
                        f"{out}: --tokenizer {tokenizer} is not the tokenizer this run started "
                        "with; drop it to resume with the run's own"
                    )
                tokenizer = None
            given = {
                **options,
                **({"tokenizer": tokenizer} if tokenizer else {}),
                **({"vocab_size": vocab_size} if vocab_size is not None else {}),
            }
            info = saved.get("tokenizer")  # older runs saved no cap: their tokenizer's size
            cap = info.get("vocab_cap", tok.vocab_size) if isinstance(info, dict) else None
            saved_tokenizer = {"tokenizer": tok.kind, "vocab_size": cap}
            _check_resumed_options(out, {**config.to_dict(), **saved_tokenizer}, given)
        else:
            _check_fresh(out)
            made = _first_missing(out)  # the folder the run will make, out or above it
            config = TrainConfig(**options)
            config.check()
            if config.minutes is not None and config.epochs is not None:  # older runs saved both
                raise RnnembedError(
                    "give minutes or epochs, not both (--minutes or --epochs): the schedule "
                    "follows one budget"
                )
            tok = tokenizer_for(
                tokenizer or "bpe", lambda: iter_texts(corpus, **read), vocab_size=vocab_size
            )
        train_ids = torch.from_numpy(tok.encode_stream(iter_texts(corpus, **read))[0])
        if valid:
            valid_ids = torch.from_numpy(tok.encode_stream(iter_texts(valid, **read))[0])
        else:
            held = max(1, min(int(len(train_ids) * VALID_FRACTION), VALID_MAX_TOKENS))
            train_ids, valid_ids = train_ids[: len(train_ids) - held], train_ids[-held:]
            log.info("no --valid given: holding out the last %d tokens for validation", held)
        fingerprint = _fingerprint(train_ids, valid_ids)
        if resume and saved.get("data_fingerprint") != fingerprint:
            raise RnnembedError(
                f"{out}: the corpus differs from the one this run started on; resume with the "
                "same files (and --valid), or start a new run in another folder"
            )
        if not resume:
            config = choose_defaults(config, tok.kind, tok.vocab_size)
            check_corpus_size(len(train_ids), config.batch_size)  # before anything is written
            check_model_fits(config, tok.vocab_size)
            _write_config(
                out, model_config(config, tok.vocab_size), config, tok, fingerprint, vocab_size or 0
            )
            tok.save(out / TOKENIZER)
        log.info(
            "training %s%s %d×%d, batch %d × bptt %d, %s, lr %g, on %s tokens",
            "bidirectional " if config.bidirectional else "",
            config.cell,
            config.layers,
            config.hidden,
            config.batch_size,
            config.bptt,
            f"{config.minutes} minutes"
            if config.minutes is not None
            else f"{config.epochs} epochs",
            config.lr,
            f"{len(train_ids):,}",
        )
        halves = config.bidirectional and config.minutes is not None
        each = replace(config, minutes=config.minutes / 2) if halves else config
        runs = [(out, train_ids, valid_ids, False)]
        if config.bidirectional:
            runs.append((out / BACKWARD, train_ids.flip(0), valid_ids.flip(0), True))
        try:
            trained = [
                _train_direction(folder, each, tok, ids, held, backward, resume, progress)
                for folder, ids, held, backward in runs
            ]
        except Exception:  # not Ctrl-C: an interrupted run stays resumable
            if not resume:
                _discard_unsaved_run(out, made)
            raise
        lm = cls(
            trained[0][0], tok, config, backward=trained[1][0] if config.bidirectional else None
        )
        lm.results = [result for _, result in trained]
        return lm

    # -- files -------------------------------------------------------------------------------

    def save(self, path: str | Path) -> None:
        """Write ``config.json``, ``model.safetensors`` (and ``backward/model.safetensors``)
        and ``tokenizer.json`` into ``path``."""
        path = _model_folder(path)
        check_writable(path, folder=True)
        _write_config(path, self.config, self.train_config, self.tokenizer)
        _save_weights(self.model, path / WEIGHTS)
        if self.backward is not None:
            _save_weights(self.backward, path / BACKWARD / WEIGHTS)
        self.tokenizer.save(path / TOKENIZER)

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> LanguageModel:
        """Read a model folder written by :meth:`train` or :meth:`save` onto ``device`` (auto:
        a GPU when there is one, as training does; or cpu, cuda, cuda:N)."""
        device = pick_device(device)
        path = _model_folder(path)
        saved = _read_config(path)
        tokenizer = Tokenizer.load(path / TOKENIZER)
        config = _saved_config(path, ModelConfig, lambda: saved["model"])
        if config.vocab_size != tokenizer.vocab_size:
            raise RnnembedError(
                f"{path}: the tokenizer ({tokenizer.vocab_size} ids) does not match the model "
                f"({config.vocab_size}); restore the folder's files from one run"
            )
        train_config = _saved_config(path, TrainConfig, lambda: saved.get("train", {}))
        model = _load_weights(path / WEIGHTS, RecurrentLM(config)).to(device).eval()
        backward = None
        if train_config.bidirectional:
            backward = _load_weights(path / BACKWARD / WEIGHTS, RecurrentLM(config))
            backward = backward.to(device).eval()
        return cls(model, tokenizer, train_config, backward=backward)

    # -- embeddings --------------------------------------------------------------------------

    def encode(
        self,
        texts: Sequence[str],
        pooling: str = DEFAULT_POOLING,
        normalize: bool = True,
        batch_size: int = 64,
    ) -> np.ndarray:
        """Embed texts: float32 (len(texts), dim), see :mod:`rnnembed.embedding`."""
        return embedding.encode(
            self, texts, pooling=pooling, normalize=normalize, batch_size=batch_size
        )

    def encode_ids(
        self,
        token_ids: Sequence[Sequence[int]],
        pooling: str = DEFAULT_POOLING,
        normalize: bool = True,
        batch_size: int = 64,
    ) -> np.ndarray:
        """:meth:`encode` of texts given as this model's token ids, read as given."""
        return embedding.encode_ids(
            self, token_ids, pooling=pooling, normalize=normalize, batch_size=batch_size
        )

    def stream(self, pooling: str = DEFAULT_POOLING, normalize: bool = True) -> EmbeddingStream:
        """A running embedding: ``feed`` text in chunks, read ``vector()`` at any time."""
        return EmbeddingStream(self, pooling=pooling, normalize=normalize)

    def dim(self, pooling: str = DEFAULT_POOLING) -> int:
        """Length of the vectors :meth:`encode` returns with this pooling."""
        return embedding.embedding_dim(self, pooling)

    def fingerprint(self, pooling: str = DEFAULT_POOLING) -> str:
        """sha256 of weights, pooling (with its constants) and dimension: identifies what built
        an index.
        Computed once per pooling: a loaded model's weights are not expected to change."""
        check_pooling(pooling)
        if pooling not in self._fingerprints:
            self._fingerprints[pooling] = embedding.fingerprint(self, pooling)
        return self._fingerprints[pooling]

    @contextmanager
    def adapted(self, texts: Sequence[str]) -> Iterator[LanguageModel]:
        """This model with the sif pooling's means and whitening fitted on ``texts`` instead of
        its training corpus, until the block ends (BERT-whitening's domain adaptation, Su et
        al. 2021): unlabelled texts of the domain, such as the sentences to be compared, move
        the vectors' centre and axes to where that domain's texts lie. Only texts of
        ``FIT_TOKENS`` tokens are fitted on. It changes the model for every caller while the
        block runs, so not for a model that is serving."""
        texts = check_texts(texts)
        models = embedding.directions(self)
        saved = [{k: v.clone() for k, v in m.stats.state_dict().items()} for m in models]
        try:
            for model in models:
                backward = model is self.backward
                if not embedding.fit_text_stats(model, texts, self.tokenizer, backward):
                    raise RnnembedError(
                        "too few texts to adapt to: give at least two of "
                        f"{embedding.FIT_TOKENS.start} to {embedding.FIT_TOKENS.stop - 1} tokens"
                        " that differ"
                    )
            self._fingerprints.clear()
            yield self
        finally:
            for model, state in zip(models, saved, strict=True):
                model.stats.load_state_dict(state)
            self._fingerprints.clear()

    def start_state(self, model: RecurrentLM) -> State:
        """The state of ``model`` (this model or its backward half) after reading ``<eos>``,
        where every text starts (:func:`rnnembed.embedding.start_state`). Computed once, as the
        fingerprint is: a single query would otherwise pay a second model call."""
        backward = model is self.backward
        if backward not in self._start_states:
            self._start_states[backward] = embedding.start_state(
                model, self.tokenizer.eos_id, self.device
            )
        return self._start_states[backward]

    # -- scoring and generating ----------------------------------------------------------------

    def evaluate(self, texts: Iterable[str]) -> Evaluation:
        """Loss, perplexity and bits per character of ``texts``, each a line (tokenized as in
        training: an ``<eos>`` after each), read as one stream; from 8,192 tokens on it is
        read in up to 16 rows side by side, each from a fresh state (:func:`stream_loss`)."""
        ids, chars = self.tokenizer.encode_stream(texts)
        if len(ids) == 0:
            raise RnnembedError("nothing to evaluate: the text is empty")
        ids_t = torch.from_numpy(ids).to(self.device)
        tokens, nll = stream_loss(self.model, ids_t, self.tokenizer.eos_id)
        return Evaluation.from_nll(tokens, chars, nll)

    def evaluate_files(self, paths: Sequence[str | Path], **read: str) -> Evaluation:
        """:meth:`evaluate` on files and folders read like a training corpus."""
        return self.evaluate(iter_texts(paths, **read))

    def perplexity(self, texts: Iterable[str]) -> float:
        """exp(mean negative log-likelihood per token) of ``texts``."""
        return self.evaluate(texts).perplexity

    def generate(
        self,
        prompt: str = "",
        max_tokens: int = 100,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> str:
        """The prompt, as given, followed by ``max_tokens`` sampled tokens, as text (a word
        tokenizer's words after a space)."""
        return "".join(self.generate_stream(prompt, max_tokens, temperature, top_k, top_p, seed))

    def generate_stream(
        self,
        prompt: str = "",
        max_tokens: int = 100,
        temperature: float = DEFAULT_TEMPERATURE,
        top_k: int = 0,
        top_p: float = 1.0,
        seed: int | None = None,
    ) -> Iterator[str]:
        """:meth:`generate`'s text in pieces as the tokens are drawn: the prompt, then each
        piece once its characters are whole. The arguments are checked before the first."""
        check_text(prompt, 0, "prompt")
        prompt_ids = self.tokenizer.encode(prompt) if prompt else []
        drawn = sample(
            self.model,
            [self.tokenizer.eos_id, *prompt_ids],
            max_tokens,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            seed=seed,
        )
        if prompt:
            yield prompt  # as given: not its tokens' text (a word model's <unk>)
        spaced = self.tokenizer.kind == "word" and prompt and not prompt[-1].isspace()
        for piece in self.tokenizer.decode_pieces(drawn):
            if spaced and piece:  # the first word after the prompt's last
                piece = piece if piece.startswith("\n") else " " + piece
                spaced = False
            yield piece


def _train_direction(
    out: Path,
    config: TrainConfig,
    tok: Tokenizer,
    train_ids: torch.Tensor,
    valid_ids: torch.Tensor,
    backward: bool,
    resume: bool,
    progress: bool,
) -> tuple[RecurrentLM, TrainResult]:
    """Train one model into ``out`` (weights, metrics, curve, checkpoint) on ids in its reading
    order (``backward``: reversed); with ``resume``, continue its checkpoint, or take it as it
    is if its run has finished."""
    finals = [r for r in read_metrics(out) if r.get("final")] if resume else []
    torch.manual_seed(config.seed)
    model = RecurrentLM(model_config(config, tok.vocab_size))
    model.set_frequencies(torch.bincount(train_ids, minlength=tok.vocab_size))
    if finals:  # on the device asked for, as a trained model is
        model = _load_weights(out / WEIGHTS, model).to(pick_device(config.device))
        if not model.stats.fitted:  # stopped after its final evaluation, before the end's save
            _finish(out, model, train_ids, tok, backward)
        return model, TrainResult.from_dict(finals[-1])
    trainer = Trainer(
        model,
        config,
        train_ids,
        valid_ids,
        tok.eos_id,
        out,
        on_eval=_log_evaluation,
        restore_best=lambda: _load_weights(out / WEIGHTS, model),
    )
    out.mkdir(parents=True, exist_ok=True)
    if resume and (out / CHECKPOINT).is_file():
        trainer.load_checkpoint()
        _truncate_metrics(out, trainer.step)
    elif resume:  # killed before its first checkpoint: start this model afresh
        _truncate_metrics(out, -1)
    if progress:
        from rnnembed.progress import TrainingProgress

        with TrainingProgress() as bar:
            trainer.progress = bar.update
            result = trainer.run()
    else:
        result = trainer.run()
    _finish(out, model, train_ids, tok, backward)
    return model, result


def _finish(
    out: Path, model: RecurrentLM, train_ids: torch.Tensor, tok: Tokenizer, backward: bool
) -> None:
    """What a run does after its final evaluation: fit the sif statistics, save, draw."""
    embedding.fit_corpus_stats(model, train_ids.to(model.embed.weight.device), tok, backward)
    _save_weights(model, out / WEIGHTS)
    _write_curve(out)


def _log_evaluation(trainer: Trainer, record: dict) -> None:
    """Append the evaluation to metrics.jsonl; keep the weights of each improvement."""
    with open(trainer.out / METRICS, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    if record.get("improved"):
        _save_weights(trainer.model, trainer.out / WEIGHTS)


def _save_weights(model: RecurrentLM, path: Path) -> None:
    save_tensors(path, model_tensors(model), metadata={"format": "rnnembed"})


def _missing_weights_hint(folder: Path) -> str:
    """Why a run ``folder`` may lack its weights: not saved yet (resume it), or saved and since
    removed (a checkpoint holds the last step's weights, not the best ones kept)."""
    if not (folder / CHECKPOINT).is_file():
        return ""
    try:
        saved = any(record.get("improved") for record in read_metrics(folder))
    except RnnembedError:
        return ""
    if saved:
        return (
            " (the run saved its best weights here and they were removed since, which its "
            "checkpoint cannot restore)"
        )
    return " (its training has not reached a first evaluation: resume it)"


def _model_folder(path: object) -> Path:
    """``path`` as a Path, or RnnembedError if it is not a path at all (None, a model, ...)."""
    check_path(path, "a model folder")
    return Path(path)


def _write_config(
    path: Path,
    config: ModelConfig,
    train_config: TrainConfig,
    tokenizer: Tokenizer,
    fingerprint: str | None = None,
    vocab_cap: int | None = None,
) -> None:
    """config.json; a run's also records its data's fingerprint and the tokenizer's requested
    ``vocab_cap`` (0: the default), which ``resume`` checks."""
    from rnnembed import __version__

    data = {
        "rnnembed_version": __version__,
        "model": config.to_dict(),
        "train": train_config.to_dict(),
        "tokenizer": {"kind": tokenizer.kind, "vocab_size": tokenizer.vocab_size},
    }
    if vocab_cap is not None:
        data["tokenizer"]["vocab_cap"] = vocab_cap
    if fingerprint is not None:
        data["data_fingerprint"] = fingerprint
    atomic_write(path / CONFIG, json.dumps(data, indent=2))


def _saved_config(path: Path, cls: type[C], part: Callable[[], dict]) -> C:
    """``cls`` from the ``part`` of the folder's saved config; RnnembedError if it is damaged."""
    try:
        return cls.from_dict(part())
    except (KeyError, TypeError, AttributeError, RnnembedError) as exc:
        detail = str(exc) if isinstance(exc, RnnembedError) else repr(exc)
        raise RnnembedError(f"{path / CONFIG}: damaged ({detail}); restore it or retrain") from None


def _check_resumed_options(out: Path, saved: dict, given: dict) -> None:
    """A resumed run keeps its saved settings (``TrainConfig`` fields and ``tokenizer``):
    refuse ``given`` options that would change them (one equal to the saved value is fine)."""
    changed = [
        f"{name} {value!r} (the run's: {saved[name]!r})"
        for name, value in given.items()
        if value != saved[name]
    ]
    if changed:
        raise RnnembedError(
            f"{out}: --resume continues the run with its saved settings, which these options "
            f"would change: {', '.join(changed)}; drop them, or start a new run in another "
            "--out folder"
        )


def _first_missing(path: Path) -> Path | None:
    """The topmost of ``path`` and its parents that does not exist (None if ``path`` does)."""
    missing = None
    while not path.exists() and path != path.parent:
        missing, path = path, path.parent
    return missing


def _saved_weights(out: Path) -> bool:
    """Whether the run in ``out`` has saved weights or a checkpoint, of either direction."""
    saved = (out / sub / name for sub in (".", BACKWARD) for name in (WEIGHTS, CHECKPOINT))
    return any(file.is_file() for file in saved)


def _stopped_as_it_started(out: Path) -> RnnembedError | None:
    """The error for ``out`` if it holds a run stopped between writing its settings and its
    tokenizer (a kill), which has nothing to resume; None otherwise. Such a folder is never
    cleared here: another process may be starting that run this very moment."""
    try:
        started = "data_fingerprint" in _read_config(out)  # a run's settings, not a model's
    except RnnembedError:
        return None
    if not started or (out / TOKENIZER).exists() or _saved_weights(out):
        return None
    return RnnembedError(
        f"{out} holds only the settings of a run stopped as it started (no tokenizer, nothing "
        "trained), which cannot be resumed: delete the folder and run the command again"
    )


def _discard_unsaved_run(out: Path, made: Path | None) -> None:
    """Leave ``out`` as a new run found it (absent, with the parents it made, or empty) if the
    run failed before saving any weights, so that the same command with other settings
    (smaller, after running out of memory) can start over there; a run with weights saved is
    kept for ``--resume``."""
    if _saved_weights(out):
        return
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
    elif out.is_dir():
        for entry in out.iterdir():
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _check_fresh(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RnnembedError(f"{out} is a file; --out names the folder to train into: choose one")
    if out.exists() and any(out.iterdir()):
        raise _stopped_as_it_started(out) or RnnembedError(
            f"{out} already exists and is not empty; pass --resume to continue the run in it, "
            "or choose a new --out folder"
        )
    check_writable(out, folder=True)


def _read_config(path: Path) -> dict:
    file = path / CONFIG
    if not path.is_dir():
        raise RnnembedError(f"{path}: no such model folder; train one with `rnnembed train`")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RnnembedError(
            f"{path}: no {CONFIG}, so this is not a model folder; train one with `rnnembed train`"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RnnembedError(f"{file}: damaged ({exc}); restore it or retrain") from None
    if not isinstance(data, dict) or "model" not in data:
        raise RnnembedError(f"{file}: not an rnnembed model config; restore it or retrain")
    return data


def _load_weights(file: Path, model: RecurrentLM) -> RecurrentLM:
    if not file.is_file():
        raise RnnembedError(
            f"{file}: missing{_missing_weights_hint(file.parent)}; restore it or retrain"
        )
    damaged = f"{file}: damaged or from another model ({{}}); restore it or retrain"
    try:
        tensors = load_file(str(file))
    except Exception as exc:
        raise RnnembedError(damaged.format(exc)) from None
    if "stats.hidden_components" in tensors:
        raise RnnembedError(
            f"{file}: saved by an earlier rnnembed, whose sif pooling removed principal "
            "directions where it now whitens; retrain the model"
        )
    try:
        load_model_tensors(model, tensors)
    except Exception as exc:
        raise RnnembedError(damaged.format(exc)) from None
    return model


def _fingerprint(*streams: torch.Tensor) -> str:
    import hashlib

    digest = hashlib.sha256()
    for ids in streams:
        digest.update(ids.numpy().tobytes())
    return digest.hexdigest()


def _truncate_metrics(out: Path, step: int) -> None:
    """Drop evaluations logged after the checkpoint being resumed (they will be redone)."""
    kept = [r for r in read_metrics(out) if r["step"] <= step and not r.get("final")]
    atomic_write(out / METRICS, "".join(json.dumps(r) + "\n" for r in kept))


def _write_curve(out: Path) -> None:
    """training_curve.png: validation and training loss/perplexity against tokens and time."""
    everything = read_metrics(out)
    records = [r for r in everything if not r.get("final")]
    finals = [r for r in everything if r.get("final")]
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=True)
    for ax, key, label in (
        (axes[0], "tokens", "tokens seen"),
        (axes[1], "seconds", "wall seconds"),
    ):
        xs = [r[key] for r in records]
        ax.plot(xs, [r["valid_ppl"] for r in records], "o-", label="validation (probe)")
        ax.plot(xs, [r["train_ppl"] for r in records], "s--", label="training")
        ax.set_xlabel(label)
        ax.set_yscale("log")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("perplexity (log scale; loss = ln ppl)")
    axes[0].legend()
    title = f"{out.name}: best probe ppl {min(r['valid_ppl'] for r in records):.2f}"
    if finals:  # the probes read the first tokens of the validation text; the final, all of it
        title += f", final validation ppl {finals[-1]['valid_ppl']:.2f} (whole file)"
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(out / CURVE) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
