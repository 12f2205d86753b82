"""Downloads against a local HTTP server: checksum, resume, retries; safe archive extraction."""

import hashlib
import io
import tarfile
import zipfile

import pytest
from helpers.web import serve

from deeplab.prepare.download import (
    DownloadError,
    UnsafeArchiveError,
    download,
    safe_extract,
)


def make_tar(path, members):
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as url:
        yield root, url



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


def test_cut_transfer_resumes_and_complete_part_is_verified(tmp_path):
    payload = bytes(range(256)) * 3000
    root = tmp_path / "www"
    root.mkdir()
    (root / "c.tar").write_bytes(payload)
    md5 = hashlib.md5(payload).hexdigest()
    cuts = [100_000, 200_000]  # two responses closed early, then a complete one
    with serve(root, cuts) as url:
        dest = tmp_path / "c.tar"
        download(f"{url}/c.tar", dest, md5, retries=3, timeout=5)
        assert dest.read_bytes() == payload and cuts == []

        # A .part that already holds every byte: the server answers 416; it is verified.
        done = tmp_path / "d.tar"
        (tmp_path / "d.tar.part").write_bytes(payload)
        (root / "d.tar").write_bytes(payload)
        download(f"{url}/d.tar", done, md5, retries=0, timeout=5)
        assert done.read_bytes() == payload


def test_http_errors_say_what_is_true(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    with serve(root) as url:
        with pytest.raises(DownloadError, match=r"HTTP 404 .*nothing was saved") as info:
            download(f"{url}/missing.tar", tmp_path / "m.tar", "0" * 32, retries=3, timeout=5)
        assert "kept" not in str(info.value)
        (root / "e.tar").write_bytes(b"x" * 1000)
        with pytest.raises(DownloadError, match=r"after 1 attempts .*partial file .*e.tar.part \(300 bytes\) is kept"):
            with serve(root, [300]) as cut_url:
                download(f"{cut_url}/e.tar", tmp_path / "e.tar", "0" * 32, retries=0, timeout=5)
