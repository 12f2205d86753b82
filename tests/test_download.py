"""Downloads against a local HTTP server: checksum, resume, retries; safe archive extraction."""

import functools
import hashlib
import http.server
import io
import tarfile
import threading
import zipfile

import pytest

from deeplab.data.download import DownloadError, UnsafeArchiveError, download, safe_extract


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support (status 206), as dataset hosts do."""

    def log_message(self, *args):
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        path = self.translate_path(self.path)
        try:
            data = open(path, "rb").read()
        except OSError:
            self.send_error(404)
            return None
        start = int(rng.split("=")[1].split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        return io.BytesIO(data[start:])


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(RangeHandler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_download_verifies_and_resumes(server, tmp_path):
    root, url = server
    payload = bytes(range(256)) * 4000
    (root / "a.tar").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    dest = tmp_path / "dl" / "a.tar"
    dest.parent.mkdir()
    (tmp_path / "dl" / "a.tar.part").write_bytes(payload[:5000])  # an interrupted download
    download(f"{url}/a.tar", dest, md5, retries=0, timeout=5)
    assert dest.read_bytes() == payload and not (tmp_path / "dl" / "a.tar.part").exists()


def test_corrupt_download_is_rejected_and_removed(server, tmp_path):
    root, url = server
    (root / "b.zip").write_bytes(b"corrupted bytes")
    dest = tmp_path / "b.zip"
    with pytest.raises(DownloadError, match="checksum mismatch"):
        download(f"{url}/b.zip", dest, "0" * 32, retries=0, timeout=5)
    assert not dest.exists() and not (tmp_path / "b.zip.part").exists()


def test_unreachable_download_fails_after_retries(tmp_path):
    with pytest.raises(DownloadError, match="after 2 attempts"):
        download("http://127.0.0.1:9/none.tar", tmp_path / "n.tar", "0" * 32, retries=1, timeout=1)


def test_real_layout_archive_extracts(tmp_path):
    arc = tmp_path / "voc.tar.gz"
    make_tar(arc, {"VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt": b"x\n"})
    out = safe_extract(arc, tmp_path / "out")
    assert (out / "VOCdevkit/VOC2012/ImageSets/Segmentation/val.txt").read_text() == "x\n"


@pytest.mark.parametrize("name", ["../evil.txt", "/abs/evil.txt", "a/../../evil.txt"])
def test_path_traversal_is_refused(tmp_path, name):
    arc = tmp_path / "bad.tar.gz"
    make_tar(arc, {"ok.txt": b"1", name: b"2"})
    with pytest.raises(UnsafeArchiveError, match="outside the target"):
        safe_extract(arc, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()
    zarc = tmp_path / "bad.zip"
    with zipfile.ZipFile(zarc, "w") as zf:
        zf.writestr(name, b"2")
    with pytest.raises(UnsafeArchiveError):
        safe_extract(zarc, tmp_path / "out")


def test_links_are_refused(tmp_path):
    arc = tmp_path / "link.tar"
    with tarfile.open(arc, "w") as tf:
        info = tarfile.TarInfo("link")
        info.type = tarfile.SYMTYPE
        info.linkname = "/etc/passwd"
        tf.addfile(info)
    with pytest.raises(UnsafeArchiveError, match="is a link"):
        safe_extract(arc, tmp_path / "out")
