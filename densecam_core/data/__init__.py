"""Reading archives: DICOM decoding, its metadata allowlist, and the pseudonyms that keep identities out.

Torch-free: decode processes and the store's readers import it.
"""
