"""Shared fixtures: a private asset cache, and tiny random backbones saved as local model folders.

The tiny models are built from a config (random weights, seeded) with word-level tokenizers made
offline by the `tokenizers` library, then saved with `save_pretrained`, so tests load them through
the real local-folder path of `continual.backbones.load_backbone`. Nothing touches the network.
"""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

for _name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
    os.environ.setdefault(_name, "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# One intra-op thread: on a small shared machine, torch's thread pool spinning against other
# processes makes these tiny models tens of times slower. Subprocesses inherit it.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# Every word the tiny tokenizers know; anything else becomes the unknown token.
WORDS = (
    "the a this that movie film plot story acting was is very really quite so good bad great "
    "awful fine positive negative neutral yes no cat dog bird sat on mat hello world one two "
    "three four five red blue green sky sea sun summary of text it and or but with i we you "
    "liked hated loved saw Input Answer Classify Write as : . , ! ?"
).split()
FILLER = [w for w in WORDS[:16] if w not in ("good", "bad")] + ["cat", "dog", "sky", "sea"]


def _tokenizer(specials: list[str], *, bert: bool):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast
    from transformers.utils import logging

    logging.disable_progress_bar()  # save_pretrained's shard bar is noise in test output

    vocab = {t: i for i, t in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=specials[1]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece()  # joins words with spaces
    if bert:
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B [SEP]",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        names = dict(pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]")
    else:
        names = dict(pad_token="<pad>", unk_token="<unk>", bos_token="<s>", eos_token="</s>")
    return PreTrainedTokenizerFast(tokenizer_object=tok, **names), len(vocab)


def build_tiny_encoder(folder: Path) -> Path:
    """A 2-layer BERT (hidden 32, 4 heads) with random weights, saved to `folder`."""
    import torch
    from transformers import BertConfig, BertModel

    tok, n_vocab = _tokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]"], bert=True)
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        pad_token_id=0,
        architectures=["BertModel"],
    )
    BertModel(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def build_tiny_decoder(folder: Path) -> Path:
    """A 2-layer Llama with grouped-query attention (4 heads, 2 key/value heads), saved.

    Weights are drawn wider than Llama's default (std 0.3, not 0.02): at hidden size 32 the
    default caps every logit near 0.1, so no prefix could make the model prefer one word.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok, n_vocab = _tokenizer(["<pad>", "<unk>", "<s>", "</s>"], bert=False)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=n_vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=2,
        eos_token_id=3,
        tie_word_embeddings=False,
        initializer_range=0.3,
        architectures=["LlamaForCausalLM"],
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("continual-cache")


@pytest.fixture(autouse=True)
def _private_cache(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep every test but the integration ones out of the user's asset cache."""
    if request.node.get_closest_marker("integration") is None:
        monkeypatch.setenv("CONTINUAL_CACHE", str(request.getfixturevalue("session_cache")))


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_encoder(tmp_path_factory.mktemp("models") / "tiny-bert")


@pytest.fixture(scope="session")
def tiny_decoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_decoder(tmp_path_factory.mktemp("models") / "tiny-llama")


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_dir: Path):
    """The tiny BERT loaded (frozen, fingerprinted). Shared: tests must not change its weights."""
    from continual.backbones import load_backbone

    return load_backbone(str(tiny_encoder_dir))


@pytest.fixture(scope="session")
def tiny_decoder(tiny_decoder_dir: Path):
    from continual.backbones import load_backbone

    return load_backbone(str(tiny_decoder_dir))


def sentiment_rows(n: int, *, seed: int = 0, labels=("positive", "negative")) -> list[dict]:
    """`n` rows `{"text", "label"}`, separable by one word: "good" -> labels[0], "bad" -> [1]."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        word, label = ("good", labels[0]) if i % 2 == 0 else ("bad", labels[1])
        words = rng.sample(FILLER, rng.randint(1, 4))
        words.insert(rng.randint(0, len(words)), word)
        rows.append({"text": " ".join(words), "label": label})
    return rows


@pytest.fixture(scope="session")
def sentiment() -> Callable[..., list[dict]]:
    """The `sentiment_rows` maker, for tests that build their own data."""
    return sentiment_rows


@pytest.fixture
def write_jsonl(tmp_path: Path) -> Callable[[str, list[dict]], Path]:
    """Write rows as JSON lines to `tmp_path/data/<name>`; returns the path."""

    def write(name: str, rows: list[dict]) -> Path:
        path = tmp_path / "data" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        return path

    return write


# --- an S3-compatible server (moto's server mode) on 127.0.0.1 ----------------------------------


def free_port() -> int:
    """A TCP port on 127.0.0.1 nothing listens on now (for servers the tests start)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1 (a real HTTP server); its URL."""
    pytest.importorskip("moto", reason="moto[server] is a test dependency (make install)")
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "server.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/moto-api/", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.skip(f"moto server did not start (exit {proc.poll()})")
                time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)
        log.close()


@pytest.fixture
def s3_bucket(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A new, empty bucket on the test S3 server, with the environment pointed at it (as a user
    would point the AWS SDK at any S3-compatible store); its s3:// URL."""
    import secrets

    import fsspec

    for key, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    name = f"continual-{secrets.token_hex(4)}"
    fsspec.filesystem("s3", skip_instance_cache=True).mkdir(name)
    return f"s3://{name}"
