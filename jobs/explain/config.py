"""The explanation job's settings: one dataclass; ``densecam explain``'s flags are generated from its fields."""

from __future__ import annotations

from dataclasses import dataclass

from densecam_core.data.decode import DEFAULT_MAX_PIXELS
from densecam_core.data.dicom import DEFAULT_DICOM_WINDOW, DICOM_WINDOWS, validate_dicom_window
from densecam_core.model.labels import ACTIVATIONS
from densecam_core.options import option
from densecam_core.store.inputs.identity import CACHE_IDENTITIES, validate_cache_identity
from densecam_core.store.layout import StoreError
from densecam_core.store.record import RunRecord
from densecam_core.vocabulary import CPU_BATCH, INPUT_NORMS, METHODS, PRECISIONS, RESIZE_MODES, validate_methods
from jobs.runtime.options import RuntimeOptions

INPUT_CACHE_MODES = ("readwrite", "read", "off")
DECODE_MODES = ("auto", "threads", "processes")
SHARD_SIZE = 64


def parse_targets(text: str) -> str | tuple[int, ...]:
    """``predicted``, ``all`` or comma-separated class ids."""
    if text in ("predicted", "all"):
        return text
    try:
        return tuple(int(t) for t in text.split(","))
    except ValueError:
        raise ValueError(f"--targets must be 'predicted', 'all' or comma-separated class ids, got {text!r}") from None


def parse_names(text: str) -> tuple[str, ...]:
    """Comma-separated class names (each stripped of surrounding spaces)."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise ValueError(f"--target-names must be comma-separated class names, got {text!r}")
    return names


@dataclass(kw_only=True)
class ExplainConfig(RuntimeOptions):
    """Everything a job run depends on. ``None`` means: derived (each field's help says how)."""

    manifest: str | None = option(
        None,
        "MURA-v1.1 folder, its CSVs, a folder of DICOM files or a DICOMDIR, a CSV/Parquet manifest with a "
        "'path' column, or a DICOMweb query (dicomweb+https://…, with --pacs-cache); omitted: a generated synthetic MURA tree beside the store",
        positional=True,
    )
    store: str = option("densecam-out/store", "store path or URL (s3://, gs://, ...)")
    checkpoint: str | None = option(None, "model weights (.pt); omitted: seeded random init")
    image_root: str | None = option(None, "folder (or URL) that relative manifest paths start from")
    pacs_cache: str | None = option(
        None,
        "a DICOMweb source (dicomweb+https://host/path?StudyDate=A-B&Modality=CR) is pulled into this folder "
        "first, under pseudonymous names; a later run pulls only what is missing",
    )
    pacs_studies: str | None = option(
        None,
        "a DICOMweb source: pull only the studies whose StudyInstanceUIDs this local file lists, one per line "
        "(the file never enters the store)",
    )
    size: int = option(320, "model input size in pixels (square)")
    resize: str = option(
        "stretch", "stretch to a square (MURA paper) or reflect-pad to a square first", choices=RESIZE_MODES
    )
    methods: tuple[str, ...] = option(
        METHODS,
        "comma-separated methods (the gradient methods by default; eigencam on request)",
        parse=validate_methods,
    )
    targets: str | tuple[int, ...] | None = option(
        None, "multi-output models: 'predicted', 'all' or comma-separated class ids", parse=parse_targets
    )
    target_names: tuple[str, ...] | None = option(
        None,
        "multi-output models: comma-separated class names to explain (the names of --labels, or of a "
        "torchxrayvision checkpoint's 18 pathologies)",
        parse=parse_names,
    )
    labels: str | None = option(
        None,
        "file of the classifier's class names, one per line in output order: recorded in the run, "
        "selectable by name in the reader (a torchxrayvision checkpoint has its pathologies by default)",
    )
    activation: str | None = option(
        None,
        "how logits become the index's probabilities: sigmoid (one output, or multi-label models such as "
        "CheXNet's) or softmax (exclusive classes); default: sigmoid for one output or a torchxrayvision "
        "model, else softmax",
        choices=ACTIVATIONS,
    )
    precision: str = option(
        "fp32", "bf16: CUDA (Ampere+) or a CPU with AVX512-BF16/AMX, else slow; fp16: CUDA only", choices=PRECISIONS
    )
    batch_size: int | None = option(
        None,
        f"images per forward/backward pass (default {CPU_BATCH} on CPU actors; a GPU actor takes the largest "
        "of 128/64/32/16/8, at most the shard size, whose measured memory fits its GPU)",
    )
    shard_size: int = option(
        SHARD_SIZE,
        f"images per shard = Zarr chunk = unit of work and resume (default {SHARD_SIZE}, or the store's runs')",
        cli_default=None,
    )
    redo_errors: bool = option(
        False, "explain again the committed shards that hold error rows (a file that was missing and is back)"
    )
    max_image_pixels: int = option(
        DEFAULT_MAX_PIXELS,
        "larger images are error rows, refused from their header before any pixel is decoded "
        "(with --resize pad the padded square counts)",
    )
    input_cache: str = option(
        "readwrite",
        "model inputs decoded once into the store and reused by later runs with the same preprocessing: "
        "readwrite, read (never write), off",
        choices=INPUT_CACHE_MODES,
    )
    cache_identity: str = option(
        "stat",
        "how a cached input is matched to its file: stat (path, size, modification time: one stat per file) or "
        "content (a digest of the bytes: reads every file, but sees files rewritten in place with their time "
        "restored, as cp -p and rsync -t do)",
        choices=CACHE_IDENTITIES,
    )
    decode: str = option(
        "auto",
        "where actors decode images: threads, or a pool of processes (auto: processes in GPU actors, whose "
        "compute thread needs the GIL to launch kernels; threads in CPU actors)",
        choices=DECODE_MODES,
    )
    input_norm: str | None = option(
        None,
        "how pixels become the model's input: imagenet (three channels, ImageNet's mean and std) or xrv "
        "(torchxrayvision's: one grey channel in [-1024, 1024]); default: xrv for a 1-channel model, else imagenet",
        choices=INPUT_NORMS,
    )
    cuda_graphs: bool = option(
        True,
        "GPU actors record the forward and backward pass once as a CUDA graph and replay it for every batch: the "
        "same maps, one launch instead of about a thousand (CPU actors ignore it)",
    )
    synthetic_images: int = option(200, "size of the generated tree without a manifest")
    dicom_window: str = option(
        DEFAULT_DICOM_WINDOW,
        "the VOI transform of DICOM sources: first (the file's first window, else its VOI LUT, else min-max), "
        "lut (its VOI LUT first), minmax or percentile (0.5-99.5 %%) of the image's values",
        choices=DICOM_WINDOWS,
    )
    pseudonym_key: str | None = option(
        None,
        "key file for the pseudonyms of DICOM patient, study and instance identifiers (default: "
        "$DENSECAM_PSEUDONYM_KEY, else ~/.config/densecam/pseudonym.key, created on first use; never in a store)",
    )
    keep_identifiers: bool = option(
        False, "write DICOM PatientID, StudyInstanceUID and SOPInstanceUID in clear (only for data you may share)"
    )

    def validate(self) -> None:
        """Cheap checks of settings alone, before the manifest or the checkpoint is touched."""
        if self.size < 32:
            raise ValueError(f"--size must be at least 32 pixels, got {self.size}")
        if self.shard_size < 1 or (self.batch_size is not None and self.batch_size < 1):
            raise ValueError("--shard-size and --batch-size must be >= 1")
        self.validate_runtime()
        if self.max_image_pixels < 1:
            raise ValueError(f"--max-image-pixels must be >= 1, got {self.max_image_pixels}")
        validate_cache_identity(self.cache_identity)
        if self.input_cache not in INPUT_CACHE_MODES:
            raise ValueError(f"--input-cache must be one of {INPUT_CACHE_MODES}, got {self.input_cache!r}")
        if self.decode not in DECODE_MODES:
            raise ValueError(f"--decode must be one of {DECODE_MODES}, got {self.decode!r}")
        validate_dicom_window(self.dicom_window)
        if self.targets is not None and self.target_names is not None:
            raise ValueError("pass --targets (class ids) or --target-names (class names), not both")
        if self.keep_identifiers and self.pseudonym_key is not None:
            raise ValueError("--keep-identifiers writes identifiers in clear: it takes no --pseudonym-key")


def decode_processes_for(config: ExplainConfig, gpus_per_worker: float, threads: int) -> int:
    """How many decode processes each actor keeps (0: it decodes with threads)."""
    if config.decode == "processes" or (config.decode == "auto" and gpus_per_worker > 0):
        return max(1, threads)
    return 0


def batch_size_for(config: ExplainConfig, gpus_per_worker: float) -> int | None:
    """--batch-size, or the default for the actors' device (None: each GPU actor measures its own)."""
    if config.batch_size is not None:
        return config.batch_size
    return None if gpus_per_worker > 0 else CPU_BATCH


def shard_size_for(store: str, flag: int | None) -> int:
    """--shard-size, else the shard size of the store's runs (resume without surprises), else the default."""
    return flag or _existing_shard_size(store) or SHARD_SIZE


def _existing_shard_size(store: str) -> int | None:
    """Without --shard-size, adopt the shard size of the store's runs (resume without surprises)."""
    try:
        from densecam_core.store.reader import open_store

        runs = open_store(store).run_metadata()
    except (StoreError, FileNotFoundError, OSError):
        return None
    sizes = {RunRecord.parse(meta).shard_size for meta in runs.values()}
    return sizes.pop() if len(sizes) == 1 else None
