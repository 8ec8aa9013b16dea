"""Reading archives: manifests (MURA trees, CSV/Parquet, folders of files, DICOMDIR), decoding (PNG, JPEG,
TIFF, DICOM to uint8, with the DICOM metadata allowlist and pseudonyms), preprocessing to the model's
input, geometry, the batch loader, and synthetic trees.

Torch-free except the loader: decode processes and the store's readers import it.
"""
