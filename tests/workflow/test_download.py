"""The downloader against a real HTTP server on loopback, started here with fixture bytes made here."""
import hashlib
import http.server
import threading

import pytest

from concerto_workflow.download import Checksum, DownloadError, fetch, read_lock

BODY = bytes(range(256)) * 4096          # 1 MiB, so a cut in the middle is a real partial file
SHA = hashlib.sha256(BODY).hexdigest()


class _Handler(http.server.BaseHTTPRequestHandler):
    """GET /ok (Range supported), /drop (first response cut after half the body, then Range
    supported), /norange (drops once, then ignores Range and sends 200), anything else 404."""

    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        srv.requests.append((self.path, self.headers.get("Range")))
        if self.path not in ("/ok", "/drop", "/norange", "/changed"):
            self.send_error(404, "Not Found")
            return
        body = srv.changed if self.path == "/changed" else BODY
        n_seen = sum(p == self.path for p, _ in srv.requests)
        start = 0
        rng = self.headers.get("Range")
        if rng and self.path != "/norange":
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        if self.path in ("/drop", "/norange") and n_seen == 1:
            self.wfile.write(body[: len(body) // 2])   # then hang up mid-file
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body[start:])


@pytest.fixture
def server():
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.requests, srv.changed = [], BODY
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    yield srv, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _only(path, name):
    """Files left in the directory: the output only (no .part)."""
    return sorted(p.name for p in path.iterdir()) == sorted(name if isinstance(name, list) else [name])


def test_download_with_published_checksum(server, tmp_path):
    _, base = server
    out = fetch(f"{base}/ok", tmp_path / "x.bin", name="demo", checksum=Checksum("sha256", SHA), backoff=0)
    assert out.read_bytes() == BODY and _only(tmp_path, "x.bin")


def test_md5_checksum_also_accepted(server, tmp_path):
    _, base = server
    fetch(f"{base}/ok", tmp_path / "x.bin", name="demo", checksum=Checksum("md5", hashlib.md5(BODY).hexdigest()))
    assert (tmp_path / "x.bin").read_bytes() == BODY


def test_mismatch_is_rejected_and_the_file_removed(server, tmp_path):
    _, base = server
    with pytest.raises(DownloadError, match=r"dataset 'demo'.*/ok.*sha256.*removed"):
        fetch(f"{base}/ok", tmp_path / "x.bin", name="demo", checksum=Checksum("sha256", "0" * 64), backoff=0)
    assert list(tmp_path.iterdir()) == []


def test_dropped_connection_is_resumed_with_range(server, tmp_path):
    srv, base = server
    out = fetch(f"{base}/drop", tmp_path / "x.bin", name="demo", checksum=Checksum("sha256", SHA), backoff=0)
    assert out.read_bytes() == BODY and _only(tmp_path, "x.bin")
    ranges = [r for p, r in srv.requests if p == "/drop"]
    assert ranges == [None, f"bytes={len(BODY) // 2}-"]     # the second request resumed


def test_server_ignoring_range_restarts_from_zero(server, tmp_path):
    srv, base = server
    out = fetch(f"{base}/norange", tmp_path / "x.bin", name="demo", checksum=Checksum("sha256", SHA), backoff=0)
    assert out.read_bytes() == BODY
    assert len([p for p, _ in srv.requests if p == "/norange"]) == 2


def test_404_names_dataset_and_url_and_leaves_nothing(server, tmp_path):
    srv, base = server
    with pytest.raises(DownloadError, match=r"dataset 'pbmc45k'.*/missing.*HTTP 404"):
        fetch(f"{base}/missing", tmp_path / "x.bin", name="pbmc45k", backoff=0)
    assert list(tmp_path.iterdir()) == []
    assert len(srv.requests) == 1          # a 404 is not retried


def test_unreachable_host_gives_up_and_leaves_no_output(tmp_path):
    # a port nobody listens on: connection refused every time
    with pytest.raises(DownloadError, match=r"dataset 'demo'.*after 2 attempts"):
        fetch("http://127.0.0.1:9/x", tmp_path / "x.bin", name="demo", retries=1, backoff=0, timeout=2)
    assert not (tmp_path / "x.bin").exists()


def test_lock_records_first_download_and_verifies_later_ones(server, tmp_path):
    srv, base = server
    lock = tmp_path / "downloads.lock.yaml"
    out_dir = tmp_path / "d"
    fetch(f"{base}/changed", out_dir / "x.bin", name="demo", lock=lock, backoff=0)
    entry = read_lock(lock)["demo/x.bin"]
    assert entry["sha256"] == SHA and entry["bytes"] == len(BODY) and entry["url"].endswith("/changed")
    (out_dir / "x.bin").unlink()
    fetch(f"{base}/changed", out_dir / "x.bin", name="demo", lock=lock, backoff=0)   # same bytes: fine
    (out_dir / "x.bin").unlink()
    srv.changed = BODY[::-1]               # the host now serves different bytes
    with pytest.raises(DownloadError, match=r"dataset 'demo'.*/changed.*not the expected"):
        fetch(f"{base}/changed", out_dir / "x.bin", name="demo", lock=lock, backoff=0)
    assert list(out_dir.iterdir()) == []
    assert read_lock(lock)["demo/x.bin"]["sha256"] == SHA   # the lock is not overwritten
