"""Files and thumbnails are served only from inside their root, as checked.

The race (a folder on the path swapped for a symlink between the check and the open)
is made deterministic by calling the two steps the server uses, ``check_file`` then
``open_checked``, with the swap in between. Route-level tests cover the cached
thumbnail, which must not be served once its file is gone or leads outside.
"""
from __future__ import annotations

import os
import shutil
import threading

import pytest

pytestmark = pytest.mark.skipif(os.name != "posix", reason="symlinks and FIFOs")


def _tree(base) -> tuple[str, str]:
    """``base/top/library/a/b/photo.png`` (the real file) and the same tree under
    ``base/evil`` holding a secret at the same relative place. Returns (root, path)."""
    root = os.path.join(str(base), "top", "library")
    path = os.path.join(root, "a", "b", "photo.png")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        f.write(b"the real photo")
    evil = os.path.join(str(base), "evil", "top", "library", "a", "b")
    os.makedirs(evil)
    with open(os.path.join(evil, "photo.png"), "wb") as f:
        f.write(b"SECRET outside the library")
    return os.path.realpath(root), os.path.realpath(path)


def _swap(real: str, evil: str) -> None:
    """Replace the file or folder ``real`` by a symlink to ``evil``."""
    os.rename(real, real + ".moved")
    os.symlink(evil, real)


# Which component of the path is swapped, relative to base: the file itself, the folders
# inside the root, the root itself, and a folder above the root.
SWAPS = ["top/library/a/b/photo.png", "top/library/a/b", "top/library/a", "top/library", "top"]


@pytest.mark.parametrize("component", SWAPS)
def test_a_component_swapped_for_a_symlink_after_the_check_is_refused(tmp_path, component):
    from web.paths import check_file, open_checked

    root, path = _tree(tmp_path)
    checked = check_file(path, root)
    assert checked is not None and checked.path == path and checked.root == root
    _swap(str(tmp_path / component), str(tmp_path / "evil" / component))
    # The plain path now leads to the secret...
    with open(path, "rb") as f:
        assert f.read().startswith(b"SECRET")
    # ...but the checked open refuses to follow the symlink.
    with pytest.raises(OSError):
        os.close(open_checked(checked))


def test_without_a_swap_the_checked_file_is_opened(tmp_path):
    from web.paths import check_file, open_checked

    root, path = _tree(tmp_path)
    fd = open_checked(check_file(path, root))
    with os.fdopen(fd, "rb") as f:
        assert f.read() == b"the real photo"


def test_a_file_replaced_after_the_check_is_refused_when_gone_or_not_a_file(tmp_path):
    from web.paths import check_file, open_checked

    root, path = _tree(tmp_path)
    checked = check_file(path, root)
    os.remove(path)
    with pytest.raises(OSError):
        open_checked(checked)
    os.mkdir(path)  # a folder where the file was
    with pytest.raises(OSError):
        open_checked(checked)
    os.rmdir(path)
    os.mkfifo(path)  # a FIFO: opening it for reading must neither block nor succeed
    outcome = []

    def attempt():
        try:
            os.close(open_checked(checked))
            outcome.append("opened")
        except OSError:
            outcome.append("refused")

    t = threading.Thread(target=attempt, daemon=True)
    t.start()
    t.join(10)
    assert outcome == ["refused"]


def test_check_file_accepts_only_regular_files_inside_the_root(tmp_path):
    from web.paths import check_file

    root, path = _tree(tmp_path)
    assert check_file(path, root) is not None
    assert check_file(root, root) is None  # the root itself
    assert check_file(os.path.dirname(path), root) is None  # a folder
    assert check_file(path + "\x00.png", root) is None
    assert check_file(os.path.join(root, "missing.png"), root) is None
    outside = str(tmp_path / "evil" / "top" / "library" / "a" / "b" / "photo.png")
    assert check_file(outside, root) is None
    link = os.path.join(root, "a", "link.png")
    os.symlink(outside, link)  # a symlink leading out of the root
    assert check_file(link, root) is None
    inner = os.path.join(root, "a", "inner.png")
    os.symlink(path, inner)  # a symlink that stays inside is resolved and allowed
    assert check_file(inner, root).path == path


# -- through the routes ----------------------------------------------------------------------
def _png(writable_library):
    g = next(g for g in writable_library.images if g.format == "PNG")
    return writable_library.ids[g.rel], os.path.join(writable_library.root, *g.rel.split("/"))


def _client(writable_library):
    from web import create_app

    return create_app(writable_library.settings, service=writable_library.service).test_client()


def test_cached_thumbnail_is_not_served_once_its_file_leads_outside(writable_library, tmp_path):
    client = _client(writable_library)
    item, path = _png(writable_library)
    assert client.get(f"/api/items/{item}/thumbnail?size=64").status_code == 200  # now cached
    secret = tmp_path / "secret.png"
    shutil.copyfile(path, secret)
    os.remove(path)
    os.symlink(str(secret), path)
    assert client.get(f"/api/items/{item}/thumbnail?size=64").status_code == 404
    assert client.get(f"/api/items/{item}/file").status_code == 404


def test_cached_thumbnail_is_not_served_once_its_folder_is_swapped(writable_library, tmp_path):
    client = _client(writable_library)
    item, path = _png(writable_library)
    assert client.get(f"/api/items/{item}/thumbnail?size=64").status_code == 200
    folder = os.path.dirname(path)
    outside = tmp_path / "elsewhere"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    os.symlink(str(outside), folder)  # the folder now leads out of the root
    assert client.get(f"/api/items/{item}/thumbnail?size=64").status_code == 404
    assert client.get(f"/api/items/{item}/file").status_code == 404


def test_cached_thumbnail_of_a_removed_file_is_404(writable_library):
    client = _client(writable_library)
    item, path = _png(writable_library)
    first = client.get(f"/api/items/{item}/thumbnail?size=64")
    assert first.status_code == 200 and first.mimetype == "image/jpeg"
    os.remove(path)
    assert client.get(f"/api/items/{item}/thumbnail?size=64").status_code == 404
