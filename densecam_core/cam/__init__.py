"""Class activation maps: the one-pass Explainer (CAM and five gradient methods at four blocks) and its CUDA-graph replay."""
