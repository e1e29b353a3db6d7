"""Per-sample input embeddings: a small vector that summarises a raw input (pure numpy).

DIMEE (seed paper 004) assigns a sample to the mobile, the edge or the cloud by the distance of
its input embedding to three pool means. Its authors' code takes one L2 norm per token of BERT's
embedding-layer output; the image analogue used here is ``patchnorm``: the L2 norm of every
p x p patch over all channels (``(H/p)(W/p)`` values; 49 for a 28 x 28 image and p = 4).
``raw`` is the flattened input itself.

A kind is written as a name: ``"patchnorm4"`` (kind and patch size) or ``"raw"``. The exit
profile stores the name with the embedding (``ExitProfile.embedding_kind``), so a node that
embeds a new input at run time can check it computes the same thing (``embed(x, name)``).

No I/O, no engines: the policy modules may import this one.
"""

from __future__ import annotations

import re
from typing import Sequence, Tuple

import numpy as np

from agent.errors import UsageError

KINDS = ("patchnorm", "raw")
CHOICES = ("auto", "patchnorm", "raw", "none")  # the profile command's --embedding values
DEFAULT_PATCH = 4
RAW_MAX_VALUES = 1024  # auto: a non-image input is embedded raw up to this many values


def kind_name(kind: str, patch: int = DEFAULT_PATCH) -> str:
    """The stored name of an embedding kind: ``patchnorm`` + patch size, or ``raw``."""
    if kind == "patchnorm":
        return "patchnorm%d" % patch
    if kind == "raw":
        return "raw"
    raise UsageError("embedding: unknown kind %r (known: %s)" % (kind, ", ".join(KINDS)))


def parse_kind_name(name: str) -> Tuple[str, int]:
    """``"patchnorm4"`` -> ``("patchnorm", 4)``; ``"raw"`` -> ``("raw", 0)``."""
    if name == "raw":
        return "raw", 0
    m = re.match(r"patchnorm(\d+)$", name or "")
    if m is None or int(m.group(1)) < 1:
        raise UsageError("embedding: unknown kind name %r (expected patchnorm<P> or raw)" % name)
    return "patchnorm", int(m.group(1))


def input_embedding(x: np.ndarray, kind: str = "patchnorm",
                    patch: int = DEFAULT_PATCH) -> np.ndarray:
    """The (N, D) float64 embedding of a batch ``x`` (N, ...).

    ``patchnorm``: ``x`` is (N, C, H, W) with H and W divisible by ``patch``; the result is the
    L2 norm over (C, patch, patch) of every patch, row-major over the patch grid.
    ``raw``: ``x`` flattened to (N, prod(shape[1:])).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise UsageError("embedding: expected a batch (N, ...), got shape %s" % (x.shape,))
    n = x.shape[0]
    if kind == "raw":
        return x.reshape(n, -1).copy()
    if kind != "patchnorm":
        raise UsageError("embedding: unknown kind %r (known: %s)" % (kind, ", ".join(KINDS)))
    if x.ndim != 4 or patch < 1 or x.shape[2] % patch or x.shape[3] % patch:
        raise UsageError("embedding: patchnorm%d needs (N, C, H, W) with H and W divisible by "
                         "%d, got %s" % (patch, patch, x.shape))
    _, c, h, w = x.shape
    blocks = x.reshape(n, c, h // patch, patch, w // patch, patch)
    return np.sqrt(np.einsum("nciajb,nciajb->nij", blocks, blocks)).reshape(n, -1)


def embed(x: np.ndarray, name: str) -> np.ndarray:
    """The embedding called ``name`` (``patchnorm4``, ``raw``) of the batch ``x``."""
    kind, patch = parse_kind_name(name)
    return input_embedding(x, kind, patch or DEFAULT_PATCH)


def embed_as_stored(x: np.ndarray, name: str) -> np.ndarray:
    """``embed`` rounded to float32, as the exit profile stores it: a node that embeds a new
    input this way gets bit for bit what the replay and the simulator read from the profile."""
    return embed(x, name).astype(np.float32)


def auto_kind(sample_shape: Sequence[int], patch: int = DEFAULT_PATCH) -> str:
    """What ``--embedding auto`` picks for inputs of ``sample_shape`` (without the batch):
    ``patchnorm`` for an image (C, H, W) with H, W divisible by ``patch``, else ``raw`` when
    the input has at most ``RAW_MAX_VALUES`` values, else ``none``."""
    shape = tuple(int(s) for s in sample_shape)
    if len(shape) == 3 and shape[1] % patch == 0 and shape[2] % patch == 0:
        return "patchnorm"
    return "raw" if int(np.prod(shape)) <= RAW_MAX_VALUES else "none"
