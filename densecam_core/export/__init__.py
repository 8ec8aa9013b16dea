"""The maps back to the people who look: DICOM objects beside the images they explain (a Secondary Capture
with the overlay burned in, a fractional Segmentation holding the map's values) and PNG overlay panels.

Torch-free: an export reads the store and the source files, never the model.
"""
