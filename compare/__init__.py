"""Both models side by side: Datasets, metrics, netCDF I/O, figures, `solve`."""
