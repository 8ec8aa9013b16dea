"""``densecam audit``'s settings: one field per flag (the parser is generated from them). Torch- and Ray-free."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.options import option
from jobs.runtime.options import RuntimeOptions


def parse_words(text: str) -> tuple[str, ...]:
    words = tuple(w.strip() for w in text.split(",") if w.strip())
    if not words:
        raise ValueError(f"expected comma-separated names, got {text!r}")
    return words


def parse_blocks(text: str) -> tuple[int, ...]:
    try:
        blocks = tuple(int(w) for w in parse_words(text))
    except ValueError:
        raise ValueError(f"--blocks takes comma-separated block numbers 1-4, got {text!r}") from None
    if not blocks or any(b not in (1, 2, 3, 4) for b in blocks):
        raise ValueError(f"--blocks takes comma-separated block numbers 1-4, got {text!r}")
    return blocks


@dataclass(kw_only=True)
class AuditConfig(RuntimeOptions):
    """The audit's own settings, then the runtime's (Ray, actors, limits), which ``--confirm`` uses."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str = option("latest", help="the run to audit: id, fingerprint prefix or 'latest'")
    methods: tuple[str, ...] | None = option(
        None,
        help="maps to audit, comma-separated (cam, gradcam, ...); default: cam and every method of the run",
        parse=parse_words,
    )
    blocks: tuple[int, ...] = option((1, 2, 3, 4), help="dense blocks to audit", parse=parse_blocks)
    target: tuple[str, ...] | None = option(
        None, help="target classes (names or positions), comma-separated; default: every target", parse=parse_words
    )
    control: str | None = option(
        None,
        help="a run of the same images by a model you trust: its maps' spread is the flag rule's reference "
        "instead of the run's own",
    )
    by_body_part: bool | None = option(
        None,
        help="cluster within label x body part groups, or (--no-by-body-part) within label groups; default: by body "
        "part where every such group holds at least 200 images",
    )
    body_mask: bool = option(
        True,
        help="each map's mass outside the body, from a mask of each image (the input cache's copy, else the file "
        "decoded once); --no-body-mask skips reading the images",
    )
    flag_k: float = option(3.0, help="flag a cluster whose mean corner mass exceeds median + k * MAD of the reference")
    min_cluster_images: int = option(5, help="smallest cluster that can be flagged")
    seed: int = option(0, help="seeds k-means and the paste test's sampling")
    confirm: bool = option(
        False,
        help="confirm each flagged cluster with the paste test, a Ray job (needs --checkpoint; --force redoes it)",
    )
    checkpoint: str | None = option(None, help="the run's own checkpoint, for --confirm (checked by its fingerprint)")
    paste_images: int = option(
        32, help="--confirm: images of the other label each flagged cluster's region is pasted onto"
    )

    def validate(self) -> None:
        self.validate_runtime()
        if self.confirm and not self.checkpoint:
            raise ValueError("--confirm runs the run's model: pass its --checkpoint")
        if self.flag_k <= 0 or self.min_cluster_images < 1 or self.paste_images < 2:
            raise ValueError("--flag-k must be > 0, --min-cluster-images >= 1 and --paste-images >= 2")
