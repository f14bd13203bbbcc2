"""Benchmark of rnnkernels.LSTM against its peers: `python -m bench --help`."""
