"""``densecam export STORE --run RUN --to dicom --out DIR``: a run's maps back into the radiologists' viewers.

Per image, a Secondary Capture (the radiograph with the map burned in, and a legend) and a Segmentation (the
map's values on the source's grid, or with --seg binary:T the map above T, referencing it), in new series of the
source's study, with patient and study modules read from the source file now; ``--to png`` writes overlay panels
instead.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from densecam_core.options import option
from jobs.audit.config import parse_words
from jobs.cli.generated import DefaultsFormatter, add_config_arguments, config_from_args, on_the_command_line


@dataclass(kw_only=True)
class ExportConfig:
    """What to export and where: one field per flag (the parser is generated from them)."""

    store: str = option(help="heatmap store path or URL", positional=True)
    run: str = option("latest", help="run id, model fingerprint (prefixes work) or 'latest'")
    method: str = option("gradcam", help="map to export: cam or a stored method")
    block: int = option(4, help="dense block of the map (ignored for cam)", choices=(1, 2, 3, 4))
    target: str = option("0", help="runs of several classes: a class name or a target position")
    to: str = option("dicom", help="DICOM objects, or PNG overlay panels", choices=("dicom", "png"))
    out: str = option(help="folder to write (refused if it holds other files)")
    body_part: tuple[str, ...] | None = option(None, help="only these body parts, comma-separated", parse=parse_words)
    status: str = option("ok", help="comma-separated statuses of the rows to export")
    images: str | None = option(None, help="file of image ids to export, one per line")
    limit: int | None = option(None, help="export at most this many images")
    overwrite: bool = option(False, help="write into an output folder that holds files")
    seg: str = option(
        "fractional",
        help="the Segmentation: 'fractional' (the map's values: Weasis, Slicer) or 'binary:T' (the map at or above T "
        "of its range, 0 < T < 1: the kind OHIF renders)",
    )
    alpha: float = option(0.45, help="the map's opacity over the radiograph in the Secondary Capture")
    workers: int = option(1, help="processes that export at once")
    pseudonym_key: str | None = option(
        None, help="the key the run's DICOM identifiers were pseudonymised with (default: as `densecam explain`)"
    )
    progress: bool = option(True, help="a progress bar")
    send: str | None = option(
        None,
        help="then send each object into its source's study on this DICOMweb server (dicomweb+https://host/path; "
        "credentials from $DENSECAM_DICOMWEB_TOKEN_FILE, or $DENSECAM_DICOMWEB_USER and "
        "$DENSECAM_DICOMWEB_PASSWORD_FILE, or ~/.netrc); per object in send-summary.csv",
    )
    verify: bool = option(False, help="with --send: find each stored object on the server afterwards (QIDO-RS)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="densecam export", description=__doc__, formatter_class=DefaultsFormatter)
    add_config_arguments(parser, ExportConfig)
    return parser


def main(argv: list[str] | None = None) -> int:
    from densecam_core.data.pseudonyms import PseudonymKeyError
    from densecam_core.export.run_export import ExportRequest, export_run, run_identifiers
    from densecam_core.export.send import destination, send_objects
    from densecam_core.store.reader import open_store

    config = config_from_args(ExportConfig, build_parser().parse_args(argv))
    try:
        run = open_store(config.store).run(config.run)
        images = None
        if config.images:
            with open(config.images, encoding="utf-8") as handle:
                images = [line.strip() for line in handle if line.strip()]
        request = ExportRequest(
            method=config.method,
            block=None if config.method == "cam" else config.block,
            to=config.to,
            target=int(config.target) if config.target.isdigit() else config.target,
            body_parts=config.body_part,
            statuses=tuple(config.status.split(",")),
            images=images,
            limit=config.limit,
            overwrite=config.overwrite,
            seg=config.seg,
            alpha=config.alpha,
        )
        if config.send is not None:
            if config.to != "dicom":
                raise ValueError("--send sends DICOM objects: it needs --to dicom")
            destination(config.send)  # a bad address is refused before any file is written
        identifiers = run_identifiers(run, config.pseudonym_key) if config.to == "dicom" else None
        summary = export_run(
            run, config.out, request, identifiers=identifiers, progress=config.progress, workers=config.workers
        )
        print(summary.render(config.out))
        if config.send is None:
            return 0
        sent = send_objects(Path(config.out), summary.objects, config.send, verify=config.verify)
    except (ValueError, KeyError, OSError, PseudonymKeyError) as exc:  # StoreError is a ValueError
        print(f"densecam export: {on_the_command_line(exc, ExportConfig)}", file=sys.stderr)
        return 2
    print(sent.render())
    return 1 if sent.failed else 0


if __name__ == "__main__":
    sys.exit(main())
