import hashlib
import json
import socket
import threading
from dataclasses import replace

import pytest

from rnnembed import RnnembedError
from rnnembed import datasets as ds


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("RNNEMBED_DATA_DIR", str(data))
    monkeypatch.setenv("RNNEMBED_CACHE_DIR", str(cache))
    return data, cache


def test_every_dataset_file_has_a_url_and_a_sha256():
    assert set(ds.DATASETS) == {"ptb", "wikitext-2", "tinyshakespeare"}
    for dataset in ds.DATASETS.values():
        for spec in dataset.files.values():
            assert spec.url.startswith("https://")
            assert len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0


def test_lookup_prefers_data_dir_then_cache(dirs, monkeypatch):
    data, cache = dirs
    assert ds.find_dataset("ptb", "valid") is None
    (cache / "ptb").mkdir(parents=True)
    (cache / "ptb" / "ptb.valid.txt").write_text("cached\n")
    with pytest.raises(RnnembedError, match="sha256 differs.*delete it to download it again"):
        ds.find_dataset("ptb", "valid")  # put there by hand, cut short: not trusted
    spec = ds.DATASETS["ptb"].files["valid"]
    known = replace(spec, sha256=hashlib.sha256(b"cached\n").hexdigest())
    monkeypatch.setitem(ds.DATASETS["ptb"].files, "valid", known)
    assert ds.find_dataset("ptb", "valid") == cache / "ptb" / "ptb.valid.txt"
    (data / "ptb").mkdir(parents=True)
    (data / "ptb" / "ptb.valid.txt").write_text("shared\n")
    assert ds.dataset_path("ptb", "valid", download=False) == data / "ptb" / "ptb.valid.txt"


def test_missing_without_download_says_what_to_do(dirs):
    with pytest.raises(RnnembedError, match="RNNEMBED_DATA_DIR"):
        ds.dataset_path("wikitext-2", "test", download=False)
    dirs[1].write_text("a file where the cache folder goes")
    with pytest.raises(RnnembedError, match=r"cannot write the download cache.*RNNEMBED_DATA_DIR/"):
        ds.dataset_path("wikitext-2", "test")  # before any connection is tried
    with pytest.raises(RnnembedError, match="unknown dataset"):
        ds.find_dataset("imagenet")
    with pytest.raises(RnnembedError, match="no split"):
        ds.find_dataset("ptb", "dev")


def test_download_keeps_only_a_verified_file(tmp_path):
    source = tmp_path / "source.txt"
    source.write_bytes(b"some dataset bytes\n")
    good = hashlib.sha256(source.read_bytes()).hexdigest()
    target = tmp_path / "cache" / "x" / "file.txt"
    with pytest.raises(RnnembedError, match="checksum mismatch"):
        ds.download_file(source.as_uri(), target, "0" * 64, progress=False)
    assert not target.exists() and list(target.parent.iterdir()) == []
    ds.download_file(source.as_uri(), target, good, progress=False)
    assert target.read_bytes() == source.read_bytes()
    for url in ((tmp_path / "absent").as_uri(), "notaurl", "http://[::1"):
        with pytest.raises(RnnembedError, match="could not download"):
            ds.download_file(url, target, good, progress=False)
    assert target.read_bytes() == source.read_bytes()


@pytest.mark.parametrize(
    "reply",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nsome bytes",
        b"NOT HTTP AT ALL\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nbroken",
    ],
)
def test_a_server_that_breaks_http_is_a_clear_error(tmp_path, reply):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)

        def answer() -> None:
            connection, _ = server.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(reply)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{server.getsockname()[1]}/file.txt"
        target = tmp_path / "file.txt"
        # a length that is no number is read as unknown: the bytes arrive, their sum is wrong
        with pytest.raises(RnnembedError, match="could not download|checksum mismatch"):
            ds.download_file(url, target, "0" * 64, progress=False)
        thread.join(10)
    assert list(tmp_path.iterdir()) == []


def test_the_listing_marks_a_damaged_cached_file_and_shows_the_rest(dirs, capsys):
    from rnnembed.cli import main

    (dirs[1] / "ptb").mkdir(parents=True)
    (dirs[1] / "ptb" / "ptb.valid.txt").write_text("cut short\n")
    with pytest.raises(SystemExit) as done:
        main(["datasets", "--json"])
    rows = json.loads(capsys.readouterr().out)["datasets"]
    assert done.value.code in (0, None) and len(rows) == 7
    local = {(row["dataset"], row["split"]): row["local"] for row in rows}
    assert (
        local["ptb", "valid"].startswith("refused: ") and "sha256 differs" in local["ptb", "valid"]
    )
    assert local["ptb", "train"] == ""
