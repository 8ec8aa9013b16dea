"""Map quality, one module per family: faithfulness (deletion/insertion), localisation, randomisation, similarity; sampling, the batched scorer and the report."""
