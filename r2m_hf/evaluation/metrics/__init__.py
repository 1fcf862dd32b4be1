"""`evaluate` metric modules shipped with r2m-hf, one directory per metric, loadable by path offline."""
