"""Downloads of the public datasets and of the original label files, verified before use.

What is fetched, and from where:

* CIFAR-10: the python tarball from its authors' site, checked against the MD5 that
  torchvision's ``CIFAR10`` dataset checks;
* SVHN: ``train_32x32.mat``, ``test_32x32.mat`` (and ``extra_32x32.mat`` for the runs that add
  it) from its authors' site, checked against torchvision's ``SVHN`` MD5s;
* CIFAR-100 and STL-10 (the USB protocol's; not in the paper): ``cifar-100-python.tar.gz`` and
  ``stl10_binary.tar.gz`` from their authors' sites, checked against the MD5s torchvision's
  ``CIFAR100`` and ``STL10`` check;
* the label files of the original code (``pytorch/data-local/labels/``, CC BY-NC, never shipped
  with this package) from the original's public repository at a fixed commit, each checked
  against the SHA-256 and size recorded in ``original_label_files.sha256`` beside this module.

Everything lands under one data root: ``--data-root``, else ``$MT_REPRO_DATA``, else
``$XDG_CACHE_HOME/mt-repro`` (``~/.cache/mt-repro``). A file is written as a hidden partial
file next to its destination and renamed into place only once its digest matched, so an
interrupted or refused download never leaves a file that a later run would take for complete.
A file already in place is checked again before it is used.

``$MT_REPRO_DOWNLOAD_MIRROR`` (``https://mirror.example.org`` or ``http://127.0.0.1:8000/prefix``)
redirects every download: the URL's scheme and host are replaced by the mirror's, its path is
kept (after the mirror's own path, if it has one).
"""
from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterable, Mapping

from mt_repro.core.errors import BadInput, RunFailed
from mt_repro.core.limits import MiB, regular_file

DATA_ROOT_ENV = "MT_REPRO_DATA"
MIRROR_ENV = "MT_REPRO_DOWNLOAD_MIRROR"
ORIGINAL_REPOSITORY = "https://raw.githubusercontent.com/CuriousAI/mean-teacher"
ORIGINAL_COMMIT = "546348ff863c998c26be4339021425df973b4a36"
LABELS_DIR = "labels"   # under the data root: the layout of the original's data-local/labels
_DIGESTS_FILE = "original_label_files.sha256"
_CHUNK = 1 * MiB
_TIMEOUT_S = 60


@dataclass(frozen=True)
class Download:
    """One file: where it goes under the data root, where it comes from, what it must hash to."""

    path: str
    url: str
    algorithm: str   # "md5" or "sha256"
    digest: str
    max_bytes: int   # a bound, checked before and while receiving (the digest decides the rest)

    @property
    def name(self) -> str:
        return Path(self.path).name


_CIFAR10 = Download("cifar10/cifar-10-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                    "md5", "c58f30108f718f92721af3b95e74349a", 200 * MiB)
_SVHN = {
    "train": Download("svhn/train_32x32.mat", "http://ufldl.stanford.edu/housenumbers/train_32x32.mat",
                      "md5", "e26dedcc434d2e4c54c9b2d4a06d8373", 200 * MiB),
    "test": Download("svhn/test_32x32.mat", "http://ufldl.stanford.edu/housenumbers/test_32x32.mat",
                     "md5", "eb5a983be6a315427106f1b1da71b6e3", 80 * MiB),
    "extra": Download("svhn/extra_32x32.mat", "http://ufldl.stanford.edu/housenumbers/extra_32x32.mat",
                      "md5", "a93ce644f1a588dc4d68dda5feec44a7", 1500 * MiB),
}
_CIFAR100 = Download("cifar100/cifar-100-python.tar.gz", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                     "md5", "eb9058c3a382ffc7106e4002c42a8d85", 200 * MiB)
_STL10 = Download("stl10/stl10_binary.tar.gz", "http://ai.stanford.edu/~acoates/stl10/stl10_binary.tar.gz",
                  "md5", "91f7769df0f17e558f3565bffb0c7dfb", 2700 * MiB)
DATASETS = ("cifar10", "cifar100", "svhn", "stl10")
MANUAL = {"imagenet": "ImageNet cannot be downloaded for you: its images are licensed per user. "
                      "Download ILSVRC2012 from image-net.org and lay it out as train/<wnid>/*.JPEG and "
                      "val/<wnid>/*.JPEG (see the README's Datasets section), then pass --data DIR; "
                      "--download still fetches its label file"}


def data_root(given: str | os.PathLike | None = None, environ: Mapping[str, str] = os.environ) -> Path:
    """``given``, else ``$MT_REPRO_DATA``, else the user's cache directory."""
    if given is not None:
        return Path(given)
    if environ.get(DATA_ROOT_ENV):
        return Path(environ[DATA_ROOT_ENV])
    cache = environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "mt-repro"


def mirrored(url: str, environ: Mapping[str, str] = os.environ) -> str:
    """``url`` with the scheme and host of ``$MT_REPRO_DOWNLOAD_MIRROR``, its path kept."""
    mirror = environ.get(MIRROR_ENV)
    if not mirror:
        return url
    parts = urllib.parse.urlsplit(mirror)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise BadInput(f"{MIRROR_ENV}={mirror!r}: expected http(s)://host[:port][/path]")
    original = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/") + original.path,
                                    original.query, ""))


# --- what each command needs -------------------------------------------------------------------
def dataset_downloads(dataset: str, *, extra: bool = False) -> list[Download]:
    """The files of ``dataset`` (SVHN's 1.3 GB extra file only when ``extra``)."""
    if dataset in MANUAL:
        raise BadInput(MANUAL[dataset])
    if _archive(dataset) is not None:
        return [_archive(dataset)]
    if dataset == "svhn":
        return [_SVHN["train"], _SVHN["test"]] + ([_SVHN["extra"]] if extra else [])
    raise BadInput(f"no download of {dataset!r}: there are {', '.join(DATASETS)} and the label files")


def label_downloads(relative_paths: Iterable[str] | None = None) -> list[Download]:
    """The original's label files (``cifar10/4000_balanced_labels/10.txt``, ...; all if None)."""
    known = _label_digests()
    wanted = list(known) if relative_paths is None else [str(p) for p in relative_paths]
    unknown = [p for p in wanted if p not in known]
    if unknown:
        raise BadInput(f"the original code has no label file {unknown[0]} (it has "
                       f"{', '.join(sorted({p.rsplit('/', 1)[0] for p in known}))}, files 00..19)")
    return [Download(f"{LABELS_DIR}/{p}", f"{ORIGINAL_REPOSITORY}/{ORIGINAL_COMMIT}/pytorch/data-local/labels/{p}",
                     "sha256", known[p][0], known[p][1]) for p in wanted]


def _label_digests() -> dict[str, tuple[str, int]]:
    text = resources.files(__package__).joinpath(_DIGESTS_FILE).read_text()
    digests = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            digest, size, path = line.split()
            digests[path] = (digest, int(size))
    return digests


def dataset_path(dataset: str, root: Path) -> Path:
    """What ``--data`` is given for a downloaded dataset: its tarball, or SVHN's directory."""
    archive = _archive(dataset)
    return root / (archive.path if archive is not None else "svhn")


def _archive(dataset: str) -> Download | None:
    """The one file of a dataset that ``--data`` names (None: SVHN's files, a directory)."""
    return {"cifar10": _CIFAR10, "cifar100": _CIFAR100, "stl10": _STL10}.get(dataset)


# --- fetching ----------------------------------------------------------------------------------
def fetch(downloads: Iterable[Download], root: Path, *, say: Callable[[str], None] = lambda line: None,
          environ: Mapping[str, str] = os.environ) -> list[Path]:
    """Each file in place and verified: checked again if already there, downloaded otherwise."""
    return [_fetch_one(d, root, say, environ) for d in downloads]


def _fetch_one(download: Download, root: Path, say: Callable[[str], None], environ: Mapping[str, str]) -> Path:
    target = root / download.path
    if target.exists():
        regular_file(target, "downloaded file")
        if _digest_of_file(target, download) == download.digest:
            return target
        say(f"{target} does not match its {download.algorithm.upper()} digest: downloading it again")
    url = mirrored(download.url, environ)
    say(f"downloading {download.name} from {url}")
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(target)
    partial = target.parent / f".{download.name}.partial-{os.getpid()}"
    try:
        digest = _receive(url, partial, download)
        if digest != download.digest:
            raise BadInput(f"download of {download.name} from {url} refused: its {download.algorithm.upper()} "
                           f"is {digest}, expected {download.digest} (nothing kept)")
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _remove_stale_partials(target: Path) -> None:
    """Partial files a killed process left beside ``target`` (its process is gone); another
    process's download in progress is left alone."""
    for partial in target.parent.glob(f".{target.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[1]
        if pid.isdigit() and not _alive(int(pid)):
            partial.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _receive(url: str, partial: Path, download: Download) -> str:
    """Stream ``url`` into ``partial`` (created anew, with the umask's permissions), bounded by
    ``download.max_bytes``; the digest of what arrived."""
    digest = hashlib.new(download.algorithm)
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > download.max_bytes:
                raise BadInput(f"download of {download.name} from {url} refused: the server declares "
                               f"{int(declared):,} bytes, more than the {download.max_bytes:,} it can be")
            received = 0
            with open(partial, "xb") as out:
                while chunk := response.read(_CHUNK):
                    received += len(chunk)
                    if received > download.max_bytes:
                        raise BadInput(f"download of {download.name} from {url} refused: more than the "
                                       f"{download.max_bytes:,} bytes it can be (nothing kept)")
                    digest.update(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            if declared is not None and declared.isdigit() and received != int(declared):
                raise BadInput(f"download of {download.name} from {url} refused: {received:,} of "
                               f"{int(declared):,} bytes arrived (nothing kept)")
    except urllib.error.HTTPError as exc:
        raise RunFailed(f"download of {download.name} from {url} failed: HTTP {exc.code} {exc.reason}") from None
    except (http.client.IncompleteRead, ConnectionError) as exc:
        raise BadInput(f"download of {download.name} from {url} refused: the transfer broke off "
                       f"({type(exc).__name__}; nothing kept)") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise RunFailed(f"download of {download.name} from {url} failed: {reason}") from None
    return digest.hexdigest()


def _digest_of_file(path: Path, download: Download) -> str:
    if path.stat().st_size > download.max_bytes:
        return ""
    digest = hashlib.new(download.algorithm)
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
