"""Shared pieces of the ``aevis`` commands: command output, progress bars, image-set loading.

Imports nothing from the other ``aevis_core.cli`` modules (they all import from here), so the
package has no import cycle.
"""

from __future__ import annotations

import argparse
import glob
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from aevis_core.errors import AEVisError

if TYPE_CHECKING:
    from aevis_core.data import ImageSet


def out(line: str = "") -> None:
    """Write one line of command output to stdout (the CLI's own output, not logging)."""
    sys.stdout.write(line + "\n")


def progress_bar(desc: str, total: int) -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A tqdm bar on stderr as a ``progress(done, total)`` callback, plus a close function."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc=desc, unit="img", file=sys.stderr, leave=False)

    def update(done: int, _total: int) -> None:
        bar.update(done - bar.n)

    return update, bar.close


def parse_set(spec: str) -> tuple[str, str]:
    """``NAME=PATTERN`` -> (name, pattern)."""
    name, sep, pattern = spec.partition("=")
    if not sep or not name.strip() or not pattern.strip():
        raise AEVisError(f"bad --set {spec!r}: expected NAME=PATTERN (a folder, a glob or demo:SET[:CLASS])")
    return name.strip(), pattern.strip()


def load_set(name: str, pattern: str, dataset: str | None) -> ImageSet:
    """Images of one ``--set``: ``demo:nips2017[:class name]``, a folder, or a glob of files."""
    from aevis_core.data import ImageSet, decode_image, demo_path, load_image_set
    from aevis_core.errors import ImageLoadError

    if pattern.startswith("demo:"):
        demo, _, cls = pattern[5:].partition(":")
        s = load_image_set(demo_path(demo), name=name)
        if cls:
            idx = [i for i in range(len(s)) if s.label_name(i) == cls]
            if not idx:
                raise AEVisError(f"set {name}: no demo image of class {cls!r}")
            s = s.subset(idx, name=name)
        return s
    if Path(pattern).is_dir() or not (glob.has_magic(pattern) or Path(pattern).is_file()):  # else: folder error
        return load_image_set(Path(pattern), name=name, dataset=dataset)
    files = sorted(glob.glob(pattern))
    if not files:
        raise AEVisError(f"set {name}: nothing matches {pattern!r}")
    s = ImageSet(name=name)
    for f in files:
        try:
            s.images.append(decode_image(Path(f)))
        except ImageLoadError as exc:
            s.problems.append((Path(f).name, str(exc)))
            continue
        s.ids.append(Path(f).stem)
        s.labels.append(None)
        s.paths.append(Path(f))
        s.meta.append({})
    if not s.images:
        raise AEVisError(f"set {name}: no readable image ({s.problems[0][1]})")
    return s


def load_images(spec: str, dataset: str | None = None) -> ImageSet:
    """``demo:cifar10`` / ``demo:nips2017[:class]``, a folder, or a glob of files -> ImageSet."""
    return load_set(spec, spec, dataset)


def add_common_attack(p: argparse.ArgumentParser) -> None:
    """Attack options shared by ``attack`` and ``demo``."""
    from aevis_core.attacks import METHODS

    p.add_argument("--method", default="mifgsm", help=f"one of {', '.join(METHODS)} (default mifgsm)")
    p.add_argument("--eps", default="4/255", help="L-inf budget in [0,1] pixel units, e.g. 4/255 (default)")
    p.add_argument("--steps", type=int, default=10, help="iterations (default 10)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--target", type=int, default=None, help="targeted attack to this class index")
