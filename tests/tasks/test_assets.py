"""Pinned archives read without unpacking: wheels (zip) and source archives (tar.gz)."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from tasks.assets import WheelAsset, cache_root, list_members, read_member, sha256_file
from tasks.errors import AssetError

FILES = {"pkg-1.0/data/a.csv": b"x,y\n1,2\n", "pkg-1.0/data/sub/b.txt": b"hello"}


def _place(path: Path, sdist: bool) -> WheelAsset:
    """Write an archive of FILES, then put it in the cache where a fetched one would lie."""
    if sdist:
        with tarfile.open(path, "w:gz") as t:
            for name, data in FILES.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                t.addfile(info, io.BytesIO(data))
    else:
        with zipfile.ZipFile(path, "w") as z:
            for name, data in FILES.items():
                z.writestr(name, data)
    asset = WheelAsset("pkg", "1.0", sha256_file(path), sdist=sdist)
    wheels = cache_root() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    path.rename(wheels / f"{asset.sha256}{asset.suffix}")
    return asset


@pytest.mark.parametrize("sdist", [False, True])
def test_members_of_either_archive(tmp_path: Path, sdist: bool) -> None:
    asset = _place(tmp_path / ("a.tar.gz" if sdist else "a.whl"), sdist)
    assert asset.suffix == (".tar.gz" if sdist else ".whl")
    assert read_member(asset, "pkg-1.0/data/sub/b.txt") == b"hello"
    assert sorted(list_members(asset, "pkg-1.0/data/")) == sorted(FILES)
    assert list_members(asset, "pkg-1.0/data/sub") == ["pkg-1.0/data/sub/b.txt"]
    with pytest.raises(AssetError, match="has no 'pkg-1.0/missing'"):
        read_member(asset, "pkg-1.0/missing")
