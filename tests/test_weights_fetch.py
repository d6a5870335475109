"""`cxr-weights`' download: from a local HTTP server (Range-capable), a good file lands in the cache
verified; a wrong checksum leaves nothing there; an interrupted transfer leaves no target and the
next fetch resumes it with a Range request. Also registry resolution and format detection."""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from harness.jobs.config import ConfigError, resolve_weights
from harness.weights import fetch, formats, registry

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(PAYLOAD).hexdigest()


class Server:
    """Serves `payload` (PAYLOAD) at /w/model.pth; `cut_after` bytes then drops the connection (once);
    `send_length=False`: no Content-Length (the body ends when the connection closes)."""

    def __init__(self) -> None:
        self.requests: list[dict] = []
        self.cut_after: int | None = None
        self.payload = PAYLOAD
        self.send_length = True
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep pytest output clean
                pass

            def do_GET(self):
                outer.requests.append({"path": self.path, "range": self.headers.get("Range")})
                start = 0
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                body = outer.payload[start:]
                self.send_response(206 if start else 200)
                if outer.send_length:
                    self.send_header("Content-Length", str(len(body)))
                else:
                    self.close_connection = True
                self.end_headers()
                if outer.cut_after is not None:
                    self.wfile.write(body[:outer.cut_after])
                    self.wfile.flush()
                    outer.cut_after = None
                    self.close_connection = True
                    return
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_port}/w/model.pth"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


@pytest.fixture()
def server():
    s = Server()
    yield s
    s.close()


def cache_listing(cache: Path) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file())


def test_good_file_verified_and_cached(server, tmp_path):
    target = tmp_path / "coco" / "m" / "model.pth"
    got = fetch.fetch(server.url, target, fetch.Expected(sha256=DIGEST), cache_dir=tmp_path, progress=False)
    assert got == fetch.Fetched(DIGEST, fetch.PUBLISHED, downloaded=True) and target.read_bytes() == PAYLOAD
    assert cache_listing(tmp_path) == ["coco/m/model.pth"]  # no partial file left behind, no digest recorded
    # a second fetch re-verifies the cached file, without a request
    n = len(server.requests)
    again = fetch.fetch(server.url, target, fetch.Expected(sha256_prefix=DIGEST[:8]), progress=False)
    assert again == fetch.Fetched(DIGEST, fetch.PUBLISHED, downloaded=False)
    assert len(server.requests) == n


def test_wrong_checksum_leaves_nothing(server, tmp_path):
    target = tmp_path / "model.pth"
    with pytest.raises(fetch.ChecksumMismatch, match="model.pth"):
        fetch.fetch(server.url, target, fetch.Expected(sha256_prefix="00000000"), cache_dir=tmp_path,
                    progress=False)
    assert cache_listing(tmp_path) == []
    # a cached file that no longer matches is reported, not silently used
    target.write_bytes(PAYLOAD[:-1])
    with pytest.raises(fetch.ChecksumMismatch):
        fetch.fetch(server.url, target, fetch.Expected(sha256=DIGEST), progress=False)


def test_interrupted_transfer_resumes_with_range(server, tmp_path):
    target = tmp_path / "model.pth"
    server.cut_after = 300_000
    with pytest.raises(Exception):
        fetch.fetch(server.url, target, fetch.Expected(sha256=DIGEST), cache_dir=tmp_path, progress=False)
    assert not target.exists()
    part = tmp_path / ".model.pth.part"
    assert part.is_file() and 0 < part.stat().st_size < len(PAYLOAD)
    have = part.stat().st_size
    assert fetch.fetch(server.url, target, fetch.Expected(sha256=DIGEST), cache_dir=tmp_path,
                       progress=False).digest == DIGEST
    assert target.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1]["range"] == f"bytes={have}-"  # resumed, not restarted


def test_unpublished_checksum_recorded_then_enforced(server, tmp_path):
    target = tmp_path / "model.pth"
    got = fetch.fetch(server.url, target, cache_dir=tmp_path, progress=False)
    assert got == fetch.Fetched(DIGEST, fetch.RECORDED_NOW, downloaded=True) and "recorded now" in got.describe()
    assert json.loads((tmp_path / fetch.RECORD_FILE).read_text()) == {server.url: DIGEST}
    again = fetch.fetch(server.url, target, cache_dir=tmp_path, progress=False)
    assert again.check == fetch.MATCHED_RECORD and "recorded" not in again.describe().replace("recorded at", "")
    target.write_bytes(b"tampered")  # the same URL must hash as it did on first fetch
    with pytest.raises(fetch.ChecksumMismatch):
        fetch.fetch(server.url, target, cache_dir=tmp_path, progress=False)


def test_no_digest_recorded_without_a_known_length(server, tmp_path, capsys):
    """A server that sends no Content-Length: the file may be cut short unnoticed, so its digest is
    not recorded (nothing would be enforced later from a truncated file) and the CLI says so."""
    from harness.cli.weights import main

    server.send_length = False
    target = tmp_path / "model.pth"
    got = fetch.fetch(server.url, target, cache_dir=tmp_path, progress=False)
    assert got == fetch.Fetched(DIGEST, fetch.UNVERIFIED, downloaded=True) and target.read_bytes() == PAYLOAD
    assert not (tmp_path / fetch.RECORD_FILE).exists()
    cache = tmp_path / "cache"
    server.payload = yolo_like_checkpoint()
    overrides = [f"+pretrained.registry.test.yolov5.yolov5n={{url: '{server.url}', format: ultralytics}}",
                 f"pretrained.cache_dir={cache}"]
    assert main(["test/yolov5/yolov5n", *overrides]) == 0
    out = capsys.readouterr().out
    assert "ok test/yolov5/yolov5n" in out and "NOT verified" in out and "recorded now" not in out
    assert not (cache / fetch.RECORD_FILE).exists()
    server.send_length = True  # a complete transfer of known length: recorded, and the CLI says so
    (cache / "test" / "yolov5" / "model.pth").unlink()
    assert main(["test/yolov5/yolov5n", *overrides]) == 0
    assert "digest recorded now" in capsys.readouterr().out and (cache / fetch.RECORD_FILE).is_file()


def yolo_like_checkpoint() -> bytes:
    """A small pickle naming an ultralytics class (what formats.detect_format reads; never unpickled)."""
    import pickle

    return pickle.dumps({"model": "ultralytics.nn.tasks.DetectionModel"})


def test_a_download_in_the_wrong_format_leaves_nothing(server, tmp_path, capsys):
    """The registry's `format` is checked on the downloaded file: an mmdet entry that serves an
    ultralytics-looking (or any other) file fails and the cache keeps nothing."""
    from harness.cli.weights import main

    cache = tmp_path / "cache"
    server.payload = yolo_like_checkpoint()
    overrides = [f"+pretrained.registry.test.mmdet_frcnn.R50-FPN={{url: '{server.url}', format: mmdet}}",
                 f"pretrained.cache_dir={cache}"]
    assert main(["test/mmdet_frcnn/R50-FPN", *overrides]) == 1
    err = capsys.readouterr().err
    assert "FAILED test/mmdet_frcnn/R50-FPN" in err and "needs a mmdet checkpoint" in err
    assert not cache.exists() or cache_listing(cache) == []
    with pytest.raises(formats.WrongWeightsFormat):
        fetch.fetch(server.url, tmp_path / "x.pth", cache_dir=tmp_path / "c", progress=False, fmt="mmdet")
    assert not list(tmp_path.glob("*x.pth*"))


def test_cli_fetches_registry_entry_from_local_server(server, tmp_path, capsys):
    """cxr-weights with a registry entry pointing at the local server (Hydra override)."""
    from harness.cli.weights import main

    cache = tmp_path / "cache"
    server.payload = yolo_like_checkpoint()  # the registry's format is checked on the file
    digest = hashlib.sha256(server.payload).hexdigest()
    overrides = [f"+pretrained.registry.test.yolov5.yolov5n={{url: '{server.url}', format: ultralytics, "
                 f"sha256: {digest}}}", f"pretrained.cache_dir={cache}"]
    assert main(["test/yolov5/yolov5n", *overrides]) == 0
    assert (cache / "test" / "yolov5" / "model.pth").read_bytes() == server.payload
    out = capsys.readouterr().out
    assert "ok test/yolov5/yolov5n" in out and "matches the published checksum" in out and "recorded" not in out
    assert main(["nope/yolov5/yolov5n", *overrides]) == 2
    capsys.readouterr()
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "coco/mmdet_frcnn/R50-FPN" in help_text and "047c8118" in help_text  # --help lists the registry


REG = {"coco": {"mmdet_frcnn": {"R50-FPN": {"url": "https://example.org/x/faster_rcnn_r50-047c8118.pth",
                                            "format": "mmdet", "sha256_prefix": "047c8118"}}}}


def test_resolve_registry_name_offline(tmp_path):
    with pytest.raises(registry.WeightsNotFetched, match="cxr-weights coco/mmdet_frcnn/R50-FPN"):
        registry.resolve("coco", "mmdet_frcnn", "R50-FPN", REG, tmp_path,
                         fetch_hint="cxr-weights coco/mmdet_frcnn/R50-FPN")
    with pytest.raises(registry.UnknownWeights, match="R50-FPN"):
        registry.resolve("coco", "mmdet_frcnn", "R18-FPN", REG, tmp_path)
    cached = tmp_path / "coco" / "mmdet_frcnn" / "faster_rcnn_r50-047c8118.pth"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert registry.resolve("coco", "mmdet_frcnn", "R50-FPN", REG, tmp_path) == str(cached)
    assert registry.resolve(None, "mmdet_frcnn", "R50-FPN", REG, tmp_path) is None
    with pytest.raises(ValueError, match="URL"):
        registry.resolve("https://example.org/w.pth", "mmdet_frcnn", "R50-FPN", REG, tmp_path)


def test_format_detection_and_wrong_framework_refused(tmp_path):
    """Each framework's checkpoint layout is recognised; a file of another framework's format is a
    config error naming the file."""
    mm = tmp_path / "mm.pth"
    torch.save({"meta": {}, "state_dict": {"backbone.conv1.weight": torch.zeros(1), "roi_head.bbox_head.fc_cls.weight": torch.zeros(1)}}, mm)
    d2 = tmp_path / "d2.pth"
    torch.save({"model": {"backbone.bottom_up.stem.conv1.weight": torch.zeros(1), "roi_heads.box_predictor.cls_score.weight": torch.zeros(1)}}, d2)
    import pickle

    zoo = tmp_path / "zoo.pkl"
    with open(zoo, "wb") as f:
        import numpy as np

        pickle.dump({"model": {"backbone.bottom_up.stem.conv1.weight": np.zeros(1)}, "__author__": "x"}, f)
    other = tmp_path / "other.pth"
    torch.save({"weights": torch.zeros(1)}, other)
    legacy = tmp_path / "legacy.pth"
    torch.save({"state_dict": {"rpn_head.rpn_conv.weight": torch.zeros(1)}}, legacy, _use_new_zipfile_serialization=False)
    assert [formats.detect_format(p) for p in (mm, d2, zoo, other, legacy)] == ["mmdet", "detectron2", "detectron2", None, "mmdet"]

    from omegaconf import OmegaConf

    cfg = OmegaConf.create({"pretrained": {"registry": {}, "cache_dir": str(tmp_path)}})
    assert resolve_weights(cfg, "mmdet_frcnn", "R50-FPN", str(mm)) == str(mm.resolve())
    with pytest.raises(ConfigError, match=r"d2\.pth is a detectron2 checkpoint; model mmdet_frcnn needs a mmdet"):
        resolve_weights(cfg, "mmdet_frcnn", "R50-FPN", str(d2))
    with pytest.raises(ConfigError, match="not a checkpoint of any supported framework"):
        resolve_weights(cfg, "yolov5", "yolov5n", str(other))


def test_cxr_run_checks_every_jobs_weights_before_the_first_job(tmp_path):
    """A new user's `cxr-run experiment=original_study` with an empty weights cache: nothing starts
    (no prepare, no 15 failing training jobs, no ensemble error); one message names every missing
    file and gives the one command that fetches them all."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "CXR_BENCH_WEIGHTS"}
    env["CXR_BENCH_ROOT"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "harness.cli.run", "experiment=original_study"],
                         cwd=Path(__file__).resolve().parents[1], env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode != 0, text[-3000:]
    assert text.count("cxr-weights experiment=original_study") == 1, text[-3000:]
    assert "4 pretrained weights file(s) this config needs are not in the cache" in text
    for entry in ("coco/yolov5/yolov5x", "coco/detectron2_frcnn/R50-FPN", "coco/mmdet_frcnn/R50-FPN",
                  "imagenet/classifier/efficientnet_b6"):
        assert entry in text
    assert "== prepare" not in text and "== train" not in text and "fetch it first" not in text.lower()
    assert not (tmp_path / "data").exists() and not list((tmp_path / "runs").rglob("metrics.json"))
